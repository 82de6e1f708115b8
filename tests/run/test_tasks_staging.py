"""The files of a split shard's tasks in one shared folder (`shard.taskfiles`): a task cut short, retried or redone
on resume is taken back by its log, the other tasks' files stay, and the output keeps the bytes of the whole shard."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import convert, tree

from dalle3_etl.devtools.synth import SynthSpec, write_corpus
from dalle3_etl.run.tasks import clean_task_leftovers, shard_ranges
from dalle3_etl.settings import Settings
from dalle3_etl.shard.taskconvert import convert_task
from dalle3_etl.shard.taskfiles import FILES_LOG, logged_entries
from dalle3_etl.sources.local import local_source
from dalle3_etl.store.layout import Layout

REPO = Path(__file__).resolve().parents[2]
SPEC = SynthSpec(shards=2, per_shard=60, seed=11, image_bytes=2000, json_first_ratio=0.5)
SID = "data-000000"


@pytest.fixture(scope="module")
def shards_and_whole(tmp_path_factory) -> tuple[Path, dict[str, bytes | str]]:
    """A corpus of two shards and what converting it whole publishes."""
    base = tmp_path_factory.mktemp("staging")
    write_corpus(base / "shards", SPEC)
    convert([base / "shards"], base / "whole", workers=1)
    return base / "shards", _published(base / "whole")


@pytest.fixture
def corpus(shards_and_whole) -> Path:
    return shards_and_whole[0]


@pytest.fixture
def whole(shards_and_whole) -> dict[str, bytes | str]:
    return shards_and_whole[1]


def _published(out: Path) -> dict[str, bytes | str]:
    """OUT as published (files, records, parts, rejects, manifest), without the task state and temporaries."""
    kept = ("shards/", "parts/", "rejects/", "manifest.json")
    published = {}
    for name, data in tree(out).items():
        state, _, rest = name.partition(".dalle3-etl/")
        if name == "multidatabackend.json" or (not state and rest and not rest.startswith(kept)):
            continue
        published[name] = data
    return published


def _run(corpus: Path, out: Path, workers: str, crash: str | None = None) -> subprocess.CompletedProcess:
    """A convert with tasks of 20,000 bytes in a process of its own (a crash point kills its whole group)."""
    env = dict(os.environ)
    env.pop("DALLE3_ETL_TEST_CRASH", None)
    env.update({"DALLE3_ETL_TEST_CRASH": crash} if crash else {})
    command = [sys.executable, "-m", "dalle3_etl", "convert", str(corpus), "-o", str(out), "-q", "-w", workers]
    command += ["--task-bytes", "20000"]
    return subprocess.run(
        command, cwd=REPO, env=env, start_new_session=True, capture_output=True, text=True, timeout=180
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigkill_in_the_middle_of_a_task_after_others_are_done_then_resume(corpus, whole, tmp_path, workers):
    out = tmp_path / "out"
    first = _run(corpus, out, "1", crash="task:data-000000:2")
    assert first.returncode == -9, first.stdout + first.stderr
    layout = Layout(out)
    done = sorted(layout.shard_tasks(SID).glob("done-*"))
    assert done
    # the next run is killed half-way through a task: its first files are in the shared folder, its log names them
    second = _run(corpus, out, workers, crash="sample:data-000000:3")
    assert second.returncode == -9, second.stdout + second.stderr
    cut = [p for p in layout.shard_tasks(SID).glob("staging-*") if logged_entries(p / FILES_LOG)]
    assert cut, "no task was cut short with files written"
    shared = set(os.listdir(layout.task_files(SID) / SID))
    assert set(logged_entries(cut[0] / FILES_LOG)) <= shared
    kept = set().union(*(logged_entries(p / FILES_LOG) for p in layout.shard_tasks(SID).glob("done-*")))
    assert kept and kept <= shared
    third = _run(corpus, out, workers)
    assert third.returncode == 0, third.stdout + third.stderr
    assert _published(out) == whole
    assert not layout.shard_tasks(SID).exists()


def _split(corpus: Path, out: Path):
    layout, settings = Layout(out), Settings(task_bytes=20_000)
    layout.ensure()
    src = local_source(corpus / f"{SID}.tar")
    ranges = shard_ranges(layout, src, settings)
    assert ranges is not None and len(ranges) >= 3
    results = [convert_task(src, out, settings, part) for part in ranges]
    assert all(r.ok for r in results)
    return layout, settings, src, ranges, results


def test_a_task_done_twice_or_cut_short_then_redone_gives_the_same_files(corpus, tmp_path):
    out = tmp_path / "out"
    layout, settings, src, ranges, results = _split(corpus, out)
    shared = layout.task_files(SID)
    before = tree(shared)
    assert any(name.endswith(".txt") for name in before)
    again = convert_task(src, out, settings, ranges[1])  # a retried attempt after the first one was done
    assert (again.samples, again.rejects) == (results[1].samples, results[1].rejects)
    assert "name_clash" not in again.rejects
    assert tree(shared) == before
    os.rename(layout.task_done(SID, 1), layout.task_staging(SID, 1))  # an attempt killed after its files
    third = convert_task(src, out, settings, ranges[1])
    assert (third.samples, third.rejects) == (results[1].samples, results[1].rejects)
    assert tree(shared) == before


def test_resume_takes_back_only_the_unfinished_tasks_files(corpus, tmp_path):
    out = tmp_path / "out"
    layout, _settings, _src, ranges, _results = _split(corpus, out)
    shared = layout.task_files(SID) / SID
    everything = set(os.listdir(shared))
    unfinished = set(logged_entries(layout.task_done(SID, 1) / FILES_LOG))
    assert unfinished and unfinished < everything
    os.rename(layout.task_done(SID, 1), layout.task_staging(SID, 1))
    clean_task_leftovers(layout)
    assert set(os.listdir(shared)) == everything - unfinished
    assert not layout.task_staging(SID, 1).exists()
    assert all(layout.task_done(SID, part.index).exists() for part in ranges if part.index != 1)


def test_putting_a_shard_together_does_not_import_pyarrow_dataset(corpus, tmp_path):
    # pq.read_table would import pyarrow.dataset: half a second of the driver, between the last task and the merge
    code = (
        "import sys\nfrom pathlib import Path\nfrom dalle3_etl.run.tasks import _concat_parts\n"
        "from dalle3_etl.settings import Settings\nimport pyarrow.parquet as pq\n"
        "paths = sys.argv[2:]\n_concat_parts([Path(p) for p in paths], Path(sys.argv[1]), Settings())\n"
        "import pyarrow as pa\n"
        "rows = sum(pa.ipc.open_file(pa.memory_map(p)).read_all().num_rows for p in paths)\n"
        "assert pq.ParquetFile(sys.argv[1]).metadata.num_rows == rows > 0\n"
        "print('pyarrow.dataset' in sys.modules)"
    )
    layout, _settings, _src, ranges, _results = _split(corpus, tmp_path / "out")
    parts = [str(layout.task_done(SID, part.index) / "part.arrow") for part in ranges]
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "all.parquet"), *parts], capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]
