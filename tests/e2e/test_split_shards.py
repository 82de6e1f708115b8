"""Shards converted as tasks smaller than a shard (issue 18): the same bytes as whole shards, resume per task."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from conftest import convert, tree

from dalle3_etl.check.status import shard_states
from dalle3_etl.devtools.synth import SynthSpec, write_corpus
from dalle3_etl.run import pipeline
from dalle3_etl.run import tasks as tasks_mod
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.tasks import read_plan

REPO = Path(__file__).resolve().parents[2]
SPEC = SynthSpec(shards=2, per_shard=60, seed=5, image_bytes=2000, json_first_ratio=0.5)


def out_tree(out: Path) -> dict[str, bytes | str]:
    """What a user and verify/status see: OUT's files and the shard records (temporaries and task state aside)."""
    files = tree(out)
    state = ".dalle3-etl/"
    keep = (f"{state}shards/", f"{state}parts/", f"{state}rejects/", f"{state}manifest.json")
    # multidatabackend.json names OUT's absolute path: compared apart
    return {
        k: v
        for k, v in files.items()
        if (not k.startswith(state) or k.startswith(keep)) and k != "multidatabackend.json"
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("split") / "shards"
    write_corpus(root, SPEC)
    return root


@pytest.fixture(scope="module")
def whole(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "out"
    convert([corpus], out, workers=1)
    return out_tree(out)


@pytest.mark.parametrize("task_bytes,workers", [(20_000, 1), (50_000, 2), (9_000, 2)])
def test_split_conversion_gives_the_bytes_of_whole_shards(corpus, whole, tmp_path, task_bytes, workers):
    out = tmp_path / "out"
    size = os.path.getsize(corpus / "data-000000.tar")
    assert size >= task_bytes * 3 // 2  # the shard is split
    planned = []
    real = tasks_mod.plan_tasks

    def spy(*args):
        todo, book = real(*args)
        planned.extend(t.source.shard_id for t in todo if t.part is not None)
        return todo, book

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "plan_tasks", spy)
        summary = convert([corpus], out, workers=workers, task_bytes=task_bytes)
    assert summary.exit_code == 0
    assert planned.count("data-000000") >= 2 and planned.count("data-000001") >= 2  # both shards split
    assert not summary.redone_whole  # the guessed points held
    assert out_tree(out) == whole
    assert not Layout(out).tasks_dir.exists() or not any(Layout(out).tasks_dir.iterdir())


def test_the_shard_that_ends_the_run_is_cut_finer_and_the_bytes_do_not_change(corpus, whole, tmp_path):
    """3 workers, tasks of a third of the smaller shard: it fits in the run's last round (3 tasks' worth), so its
    tasks are 4 times finer (`run.tasks.tail_settings`); the larger shard's are not."""
    sizes = {p.stem: p.stat().st_size for p in corpus.glob("*.tar")}
    smaller = min(sizes, key=lambda sid: sizes[sid])
    larger = max(sizes, key=lambda sid: sizes[sid])
    task_bytes = sizes[smaller] // 3 + 1  # 3 workers x task_bytes holds the smaller shard, not both
    out = tmp_path / "out"
    planned = []
    real = tasks_mod.plan_tasks

    def spy(*args):
        todo, book = real(*args)
        planned.extend((t.source.shard_id, t.part.length(t.source.size)) for t in todo if t.part is not None)
        return todo, book

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "plan_tasks", spy)
        summary = convert([corpus], out, workers=3, task_bytes=task_bytes)
    assert summary.exit_code == 0 and not summary.redone_whole
    counts = {sid: sum(1 for s, _ in planned if s == sid) for sid in sizes}
    assert counts[larger] == round(sizes[larger] / task_bytes)
    assert counts[smaller] >= 2 * counts[larger]  # ~12 against ~3
    lengths = [n for _, n in planned]
    assert lengths == sorted(lengths, reverse=True)  # the finer tasks run last
    assert out_tree(out) == whole


def test_a_task_size_above_the_shard_keeps_it_whole(corpus, whole, tmp_path):
    out = tmp_path / "out"
    convert([corpus], out, workers=1, task_bytes=10**12)
    assert out_tree(out) == whole


def _run(corpus: Path, out: Path, *options: str, crash: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DALLE3_ETL_TEST_CRASH"}
    if crash:
        env["DALLE3_ETL_TEST_CRASH"] = crash
    args = [sys.executable, "-m", "dalle3_etl", "convert", str(corpus), "-o", str(out), "-q", *options]
    return subprocess.run(args, cwd=REPO, env=env, start_new_session=True, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize(
    "crash", ["task:data-000000:1", "sample:data-000001:2", "assemble:data-000000", "committed:data-000001"]
)
def test_sigkill_in_a_split_shard_then_resume_gives_the_same_bytes(corpus, whole, tmp_path, crash):
    out = tmp_path / "out"
    first = _run(corpus, out, "--task-bytes", "20000", "-w", "2", crash=crash)
    assert first.returncode == -9, first.stdout + first.stderr
    layout = Layout(out)
    plans = {p.parent.name for p in layout.tasks_dir.glob("*/plan.json")}
    assert plans, "the crash came before any shard was split"
    # a resume with another task size keeps the recorded ranges of the partly done shard
    second = _run(corpus, out, "--task-bytes", "30000", "-w", "2")
    assert second.returncode == 0, second.stdout + second.stderr
    assert out_tree(out) == whole


def test_resume_redoes_only_unfinished_tasks(corpus, whole, tmp_path):
    out = tmp_path / "out"
    first = _run(corpus, out, "--task-bytes", "20000", "-w", "1", crash="task:data-000000:2")
    assert first.returncode == -9
    layout = Layout(out)
    ranges = read_plan(layout, "data-000000", orjson.loads(layout.task_plan("data-000000").read_bytes())["source"])
    assert ranges is not None and len(ranges) > 2
    done = sorted(p.name for p in layout.shard_tasks("data-000000").glob("done-*"))
    assert done and "done-2" not in done
    state = shard_states(out)["data-000000"]
    assert state["state"] == "pending"
    assert state["detail"] == f"{len(done)} of {len(ranges)} parts done"
    stamps = {name: os.stat(layout.shard_tasks("data-000000") / name / "result.json").st_mtime_ns for name in done}
    seen: list[str] = []
    from dalle3_etl.shard import taskconvert

    real = taskconvert.TaskConverter.run

    def spy(self):
        if self.shard_id == "data-000000":
            seen.append(f"done-{self.part.index}")
        return real(self)

    taskconvert.TaskConverter.run = spy
    try:
        convert([corpus], out, workers=1, task_bytes=20_000)
    finally:
        taskconvert.TaskConverter.run = real
    assert not set(seen) & set(stamps), "a task done before the crash was converted again"
    assert "done-2" in seen
    assert out_tree(out) == whole


def test_a_worker_killed_in_a_task_fails_its_shard_and_the_rerun_completes(corpus, whole, tmp_path):
    out = tmp_path / "out"
    first = _run(corpus, out, "--task-bytes", "20000", "-w", "2", crash="killself@task:data-000000:1")
    assert first.returncode == 1, first.stdout + first.stderr
    assert shard_states(out)["data-000000"]["state"] == "failed"
    second = _run(corpus, out, "--task-bytes", "20000", "-w", "2")
    assert second.returncode == 0, second.stdout + second.stderr
    assert out_tree(out) == whole


def test_webshart_indexes_of_a_split_shard_are_those_of_the_whole_one(corpus, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    convert([corpus], whole, workers=1, webshart=True)
    convert([corpus], split, workers=2, webshart=True, task_bytes=20_000)
    got, want = out_tree(split), out_tree(whole)
    assert any(name.startswith("webshart/") for name in want)
    assert got == want
