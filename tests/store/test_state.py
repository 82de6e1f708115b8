"""Run state in isolation: what a re-run plans for each kind of shard, leftover cleanup, status."""

from __future__ import annotations

import os

import orjson
import pytest

from dalle3_etl.run.cleanup import clean_leftovers
from dalle3_etl.run.plan import plan_run
from dalle3_etl.settings import Settings
from dalle3_etl.sources.base import ShardSource
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.records import ShardRecord, write_record


def _source(sid: str, size: int = 100) -> ShardSource:
    return ShardSource(sid, f"/in/{sid}.tar", size, {"path": f"/in/{sid}.tar", "size": size, "mtime_ns": 1})


@pytest.fixture
def layout(tmp_path) -> Layout:
    layout = Layout(tmp_path / "out")
    layout.ensure()
    return layout


def _complete(layout: Layout, src: ShardSource, error: str | None = None) -> None:
    write_record(
        layout,
        ShardRecord(
            shard=src.shard_id,
            source=dict(src.fingerprint),
            settings=Settings().output_fingerprint(),
            samples=1,
            rejects={},
            notes={},
            error=error,
            published=True,
        ),
    )


def _failed(layout: Layout, sid: str) -> None:
    layout.fs.write_atomic(
        layout.state / "failed" / f"{sid}.json", orjson.dumps({"shard_id": sid, "failure": "OSError"})
    )


def test_what_a_rerun_does_with_each_kind_of_shard(layout):
    done, changed, damaged, failed, new = (_source(f"s{i}") for i in range(5))
    for src in (done, changed, damaged):
        _complete(layout, src, error="truncated" if src is damaged else None)
    _failed(layout, failed.shard_id)
    changed = _source("s1", size=200)  # the file grew since it was converted

    plan = plan_run(layout, [done, changed, damaged, failed, new], retry_failed=False)
    assert [s.shard_id for s in plan.todo] == ["s1", "s3", "s4"]
    assert plan.why == {
        "s1": "input changed since it was converted",
        "s3": "failed last time",
        "s4": "not converted yet",
    }
    assert plan.skipped == ["s0", "s2"] and plan.damaged == ["s2"] and plan.deferred == []
    assert "add --retry-failed" in plan.notices()[0]

    plan = plan_run(layout, [done, changed, damaged, failed, new], retry_failed=True)
    assert [s.shard_id for s in plan.todo] == ["s1", "s2", "s3"]
    assert plan.why["s2"] == "damaged last time"
    assert plan.skipped == ["s0"] and plan.deferred == ["s4"]
    assert plan.notices() == ["--retry-failed: 1 shard(s) never converted are left for a plain run: s4."]


def _part(layout: Layout, sid: str, filenames: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"filename": filenames}), layout.part(sid))


def test_cleanup_removes_temporaries_everywhere_and_output_of_shards_without_a_record(layout):
    settings = Settings()
    kept = _source("s0")
    _complete(layout, kept)
    (layout.shard_data("s0")).mkdir()
    (layout.shard_data("s0") / "a.jpg").write_bytes(b"x")
    _part(layout, "s0", ["s0/a.jpg"])
    for sid in ("s0", "s1"):
        (layout.state / "seen" / sid).touch()
    layout.claim("s1").touch()
    layout.shard_data("s1").mkdir()  # committed files of a shard killed before its record
    (layout.shard_data("s1") / "b.jpg").write_bytes(b"y")
    (layout.shard_data("s1") / "b.txt").write_bytes(b"caption")
    _part(layout, "s1", ["s1/b.jpg"])
    temporaries = [
        layout.out / ".dalle3.parquet.tmp",
        layout.state / ".manifest.json.tmp-12",
        layout.state / "shards" / ".s1.json.tmp-7",
        layout.state / "parts" / ".s0.parquet.tmp",
        layout.state / "rejects" / ".s0.jsonl.tmp-3",
        layout.state / "failed" / ".s1.json.tmp-9",
        layout.staging("s1") / "pending" / "1",
        layout.trash / "0-shards" / "s9.json",
    ]
    for path in temporaries:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"tmp")

    clean_leftovers(layout, settings)

    assert [p for p in temporaries if p.exists()] == []
    assert not layout.shard_data("s1").exists() and not layout.part("s1").exists()
    assert (layout.shard_data("s0") / "a.jpg").read_bytes() == b"x" and layout.part("s0").exists()


def test_status_tells_whether_dalle3_parquet_is_up_to_date(tmp_path):
    import io

    from conftest import convert
    from rich.console import Console

    from dalle3_etl.check.status import print_status
    from dalle3_etl.devtools.synth import SynthSpec, write_corpus

    def status(out) -> str:
        buf = io.StringIO()
        print_status(out, Console(file=buf, width=300))
        return buf.getvalue()

    write_corpus(tmp_path / "in", SynthSpec(shards=2, per_shard=6, seed=1, image_bytes=300))
    out = tmp_path / "out"
    assert convert([tmp_path / "in"], out, workers=1).exit_code == 0
    text = status(out)
    assert "done 2, damaged 0, failed 0, pending 0" in text and "up to date" in text and "in progress" not in text
    record = Layout(out).record("data-000001")
    later = (out / "dalle3.parquet").stat().st_mtime_ns + 1_000_000_000
    os.utime(record, ns=(later, later))  # a shard completed after the last merge
    assert "out of date: run convert again" in status(out)


def test_cleanup_removes_a_claim_cut_short_by_a_kill(layout):
    """A worker killed while writing its claim (`owned/.<id>.tmp-<pid>`) leaves a temporary: the next run
    removes it, so nothing of the killed run is left (it made tests/e2e/test_resume.py fail now and then)."""

    tmp = layout.owned_dir / ".data-000002.tmp-4242"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(b"")
    clean_leftovers(layout, Settings())
    assert not tmp.exists()
