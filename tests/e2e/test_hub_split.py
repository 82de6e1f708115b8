"""`hf://` shards converted as tasks read with HTTP Range requests (issue 18), from the loopback fake Hub: the
bytes of local whole shards, a shard whose bytes do not match the Hub's sha256 never completed, a server that
ignores Range, SIGKILL then resume."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from conftest import convert, tree
from fakehub import FakeHub, files_from_dir, hub_env  # noqa: F401  (fixture)
from test_split_shards import out_tree  # OUT as verify/status see it, records included

from dalle3_etl.check.status import shard_states
from dalle3_etl.devtools.synth import SynthSpec, write_corpus
from dalle3_etl.run import pipeline
from dalle3_etl.run import tasks as tasks_mod
from dalle3_etl.run.pipeline import run_convert
from dalle3_etl.settings import load_settings
from dalle3_etl.sources.hub import transfer
from dalle3_etl.sources.resolve import resolve_inputs
from dalle3_etl.store.layout import Layout

REPO = Path(__file__).resolve().parents[2]
SPEC = SynthSpec(shards=2, per_shard=60, seed=11, image_bytes=2000, json_first_ratio=0.5)
S0 = "data/data-000000.tar"


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setattr(transfer, "RETRY_WAIT", 0.01)


@pytest.fixture(scope="module")
def local_whole(tmp_path_factory):
    """The local whole-shard conversion of the corpus (its shards beside it, in shards/)."""
    base = tmp_path_factory.mktemp("hubsplit")
    write_corpus(base / "shards", SPEC)
    convert([base / "shards"], base / "out", workers=1)
    return base / "out"


@pytest.fixture
def hub(local_whole, hub_env):  # noqa: F811
    with FakeHub(files_from_dir(local_whole.parent / "shards")) as fake:
        hub_env.point_to(fake)
        yield fake


def dataset(out: Path) -> dict[str, bytes | str]:
    """What training reads: the parquet, the reject lines, the files (records name the input: compared apart)."""
    files = tree(out / "data")
    return {"parquet": (out / "dalle3.parquet").read_bytes(), "rejects": (out / "rejects.jsonl").read_bytes(), **files}


def _split_convert(hub: FakeHub, out: Path, keep_dir: Path | None = None, **settings):
    """Convert every shard of the hub; returns (summary, {shard: tasks planned})."""
    planned: dict[str, int] = {}
    real = tasks_mod.plan_tasks

    def spy(*args):
        todo, book = real(*args)
        for t in todo:
            if t.part is not None:
                planned[t.source.shard_id] = planned.get(t.source.shard_id, 0) + 1
        return todo, book

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "plan_tasks", spy)
        summary = run_convert(
            resolve_inputs([hub.uri("data/*.tar")], keep_dir=keep_dir), out, load_settings(None, **settings)
        )
    return summary, planned


def _served_bytes(hub: FakeHub, path: str) -> tuple[int, int]:
    deadline = time.monotonic() + 5
    while any(g.body_bytes == 0 for g in hub.gets(path)) and time.monotonic() < deadline:
        time.sleep(0.01)
    gets = hub.gets(path)
    return len(gets), sum(g.body_bytes for g in gets)


@pytest.mark.parametrize("task_bytes,workers", [(20_000, 3), (9_000, 4)])
def test_hub_shards_read_in_ranges_give_the_bytes_of_local_shards(hub, local_whole, tmp_path, task_bytes, workers):
    out = tmp_path / "out"
    summary, planned = _split_convert(hub, out, workers=workers, task_bytes=task_bytes)
    assert summary.exit_code == 0
    assert planned.get("data-000000", 0) >= 2 and planned.get("data-000001", 0) >= 2  # both shards split
    assert dataset(out) == dataset(local_whole)
    # cost: one request for the scan (the whole shard, sha256 checked), one per task (its range in whole blocks)
    size = len(hub.files[S0])
    requests, served = _served_bytes(hub, S0)
    assert requests == 1 + planned["data-000000"]
    assert 2 * size <= served <= 2 * size + planned["data-000000"] * 2 * (64 << 10)
    assert not any(Layout(out).tasks_dir.glob("*/staging-*/range.tar"))


def test_a_shard_not_matching_the_hub_sha256_is_not_completed_and_a_rerun_converts_it(hub, local_whole, tmp_path):
    out = tmp_path / "out"
    hub.corrupt(S0)
    summary, planned = _split_convert(hub, out, workers=3, task_bytes=20_000)
    assert summary.exit_code == 1
    assert "data-000000" not in planned  # not split: converted whole, and failed on its sha256
    states = shard_states(out)
    assert states["data-000000"]["state"] == "failed" and states["data-000001"]["state"] == "done"
    assert not Layout(out).record("data-000000").exists()
    hub.heal()
    summary, _ = _split_convert(hub, out, workers=3, task_bytes=20_000)
    assert summary.exit_code == 0
    assert dataset(out) == dataset(local_whole)


def test_bytes_changed_after_the_scan_fail_the_shard_and_a_rerun_completes_it(hub, local_whole, tmp_path):
    out = tmp_path / "out"
    real = tasks_mod.plan_tasks
    size = len(hub.files[S0])

    def damage_after_planning(*args):
        todo, book = real(*args)
        bad = bytearray(hub.files[S0])
        bad[size * 3 // 4] ^= 0x01  # inside one task's range only
        hub.corrupt(S0, bytes(bad))
        return todo, book

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "plan_tasks", damage_after_planning)
        summary = convert([hub.uri("data/*.tar")], out, workers=3, task_bytes=20_000)
    assert summary.exit_code == 1
    failed = [r for r in summary.results if not r.ok]
    assert [r.shard_id for r in failed] == ["data-000000"] and "Hub's sha256" in failed[0].failure
    assert shard_states(out)["data-000000"]["state"] == "failed"
    assert not Layout(out).record("data-000000").exists()
    done_before = sorted(p.name for p in Layout(out).shard_tasks("data-000000").glob("done-*"))
    assert done_before  # the tasks whose bytes matched stay done
    tasks = len(orjson.loads(Layout(out).task_plan("data-000000").read_bytes())["points"]) + 1
    hub.heal()
    hub.clear_log()
    summary, planned = _split_convert(hub, out, workers=3, task_bytes=20_000)
    assert summary.exit_code == 0
    assert planned["data-000000"] == tasks - len(done_before)  # only the failed task again
    assert dataset(out) == dataset(local_whole)


def test_a_server_ignoring_range_gives_the_same_bytes(hub, local_whole, tmp_path):
    hub.ignore_range = True
    out = tmp_path / "out"
    summary, planned = _split_convert(hub, out, workers=3, task_bytes=20_000)
    assert summary.exit_code == 0 and planned.get("data-000000", 0) >= 2
    assert {g.status for g in hub.gets(S0)} == {200}
    assert dataset(out) == dataset(local_whole)


def test_hub_shards_stay_whole_when_every_worker_has_one(hub, local_whole, tmp_path):
    out = tmp_path / "out"
    summary, planned = _split_convert(hub, out, workers=2, task_bytes=20_000)  # 2 shards, 2 workers
    assert summary.exit_code == 0 and planned == {}
    assert _served_bytes(hub, S0) == (1, len(hub.files[S0]))  # streamed once, as before tasks
    assert dataset(out) == dataset(local_whole)


def _run(uri: str, out: Path, *options: str, crash: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DALLE3_ETL_TEST_CRASH"}  # HF_ENDPOINT: the fake Hub
    if crash:
        env["DALLE3_ETL_TEST_CRASH"] = crash
    args = [sys.executable, "-m", "dalle3_etl", "convert", uri, "-o", str(out), "-q", *options]
    return subprocess.run(args, cwd=REPO, env=env, start_new_session=True, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("crash", ["task:data-000000:1", "assemble:data-000001"])
def test_sigkill_in_a_hub_split_shard_then_resume_gives_the_same_bytes(hub, local_whole, tmp_path, crash):
    whole = tmp_path / "whole"
    assert convert([hub.uri("data/*.tar")], whole, workers=1).exit_code == 0  # hf:// shards read whole
    out = tmp_path / "out"
    first = _run(hub.uri("data/*.tar"), out, "--task-bytes", "20000", "-w", "3", crash=crash)
    assert first.returncode == -9, first.stdout + first.stderr
    assert {p.parent.name for p in Layout(out).tasks_dir.glob("*/plan.json")}, "killed before any shard was split"
    second = _run(hub.uri("data/*.tar"), out, "--task-bytes", "30000", "-w", "3")
    assert second.returncode == 0, second.stdout + second.stderr
    assert out_tree(out) == out_tree(whole)
    assert dataset(out) == dataset(local_whole)


def test_with_keep_tars_the_scan_is_the_download_and_tasks_read_the_kept_tar(hub, local_whole, tmp_path):
    out, keep = tmp_path / "out", tmp_path / "tars"
    summary, planned = _split_convert(hub, out, keep, workers=3, task_bytes=20_000)
    assert summary.exit_code == 0 and planned.get("data-000000", 0) >= 2
    assert _served_bytes(hub, S0) == (1, len(hub.files[S0]))  # one read of the shard in all
    assert (keep / "data-000000.tar").read_bytes() == hub.files[S0]
    assert dataset(out) == dataset(local_whole)


def test_hub_shards_read_whole_before_the_run_are_announced_first(hub, local_whole, tmp_path):
    class Announced(pipeline.Reporter):
        def __init__(self):
            self.events: list[tuple[str, list[str]]] = []

        def scanning(self, sources):
            self.events.append(("scanning", sorted(src.shard_id for src in sources)))

        def start(self, plan, total_bytes):
            self.events.append(("start", []))

    seen = Announced()
    sources = resolve_inputs([hub.uri("data/*.tar")])
    summary = run_convert(sources, tmp_path / "out", load_settings(None, workers=3, task_bytes=20_000), reporter=seen)
    assert summary.exit_code == 0
    assert seen.events == [("scanning", ["data-000000", "data-000001"]), ("start", [])]


@pytest.mark.parametrize("selection", ["data/*.tar", "data/data-000000.tar"])  # scans in a pool; one in the driver
def test_the_scans_of_hub_shards_report_the_bytes_they_read(hub, tmp_path, selection):
    class Seen(pipeline.Reporter):
        def __init__(self):
            self.events: list[tuple[str, str, int]] = []

        def scanning(self, sources):
            self.events.append(("scanning", "", 0))

        def scan_progress(self, shard_id, nbytes):
            self.events.append(("read", shard_id, nbytes))

        def start(self, plan, total_bytes):
            self.events.append(("start", "", 0))

    seen = Seen()
    sources = resolve_inputs([hub.uri(selection)])
    summary = run_convert(sources, tmp_path / "out", load_settings(None, workers=3, task_bytes=20_000), reporter=seen)
    assert summary.exit_code == 0
    kinds = [kind for kind, _, _ in seen.events]
    assert kinds[0] == "scanning" and kinds[-1] == "start" and set(kinds[1:-1]) == {"read"}
    for src in sources:
        reads = [n for kind, sid, n in seen.events if kind == "read" and sid == src.shard_id]
        assert reads and reads == sorted(reads) and reads[-1] == src.size  # the whole shard read, told at the end
