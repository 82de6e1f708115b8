"""OUT's layout: the names of its folders and the tool's files stay those existing outputs have, and the
shard-id listings see shards, never temporaries."""

from __future__ import annotations

from pathlib import Path

from dalle3_etl.store.layout import Layout


def test_every_name_under_out_is_the_one_existing_outputs_have(tmp_path):
    out = tmp_path / "out"
    layout = Layout(out)
    state = out / ".dalle3-etl"
    assert {
        "parquet": layout.parquet("dalle3.parquet"),
        "rejects": layout.merged_rejects,
        "config": layout.dataloader_config,
        "data": layout.shard_data("s1"),
        "cache": layout.cache("vae", "dalle3"),
        "manifest": layout.manifest,
        "lock": layout.lock,
        "workers": layout.workers_lock,
        "trash": layout.trash,
        "record": layout.record("s1"),
        "part": layout.part("s1"),
        "shard rejects": layout.rejects("s1"),
        "failed": layout.failed("s1"),
        "seen": layout.seen("s1"),
        "claim": layout.claim("s1"),
        "staging": layout.staging("s1"),
        "staged part": layout.staged_part("s1"),
        "staged rejects": layout.staged_rejects("s1"),
        "staged files": layout.staged_files("s1"),
        "pending": layout.staged_pending("s1"),
        "flat": layout.flat_files("s1"),
        "clashes": layout.flat_clashes("s1"),
    } == {
        "parquet": out / "dalle3.parquet",
        "rejects": out / "rejects.jsonl",
        "config": out / "multidatabackend.json",
        "data": out / "data" / "s1",
        "cache": out / "cache" / "vae" / "dalle3",
        "manifest": state / "manifest.json",
        "lock": state / "lock",
        "workers": state / "workers.lock",
        "trash": state / "trash",
        "record": state / "shards" / "s1.json",
        "part": state / "parts" / "s1.parquet",
        "shard rejects": state / "rejects" / "s1.jsonl",
        "failed": state / "failed" / "s1.json",
        "seen": state / "seen" / "s1",
        "claim": state / "owned" / "s1",
        "staging": state / "staging" / "s1",
        "staged part": state / "staging" / "s1" / "part.parquet",
        "staged rejects": state / "staging" / "s1" / "rejects.jsonl",
        "staged files": state / "staging" / "s1" / "files",
        "pending": state / "staging" / "s1" / "pending",
        "flat": state / "flat" / "s1",
        "clashes": state / "flat" / "s1" / ".dalle3-etl-clashes.json",
    }
    assert Layout.tmp(out / "rejects.jsonl") == out / ".rejects.jsonl.tmp"
    assert layout.own_files({"a.parquet", "dalle3.parquet"}) == [
        out / "a.parquet",
        out / "dalle3.parquet",
        out / "multidatabackend.json",
        out / "rejects.jsonl",
    ]


def _touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_shard_id_listings_skip_temporaries_and_missing_folders(tmp_path):
    layout = Layout(tmp_path / "out")
    assert layout.known_ids() == layout.record_ids() == layout.failed_ids() == layout.seen_ids() == set()
    layout.ensure()
    _touch(
        layout.record("s1"),
        layout.state / "shards" / ".s2.json.tmp-7",
        layout.part("s3"),
        layout.rejects("s4"),
        layout.claim("s5"),
        layout.flat_files("s6") / "a.jpg",
        layout.staged_part("s7"),
        layout.failed("s8"),
        layout.state / "failed" / ".s9.json.tmp-1",
        layout.seen("s10"),
    )
    assert layout.record_ids() == {"s1"}
    assert layout.known_ids() == {"s1", "s3", "s4", "s5", "s6", "s7"}
    assert layout.failed_ids() == {"s8"} and layout.seen_ids() == {"s10"}


def test_own_temporaries_are_those_of_the_tools_files_only(tmp_path):
    layout = Layout(tmp_path / "out")
    names = [
        ".a[1].parquet.tmp",
        ".rejects.jsonl.tmp-42",
        ".multidatabackend.json.tmp-1",
        ".user.tmp",
        "a[1].parquet",
        ".other.parquet.tmp",
    ]
    _touch(*(layout.out / name for name in names))
    assert layout.own_temporaries({"a[1].parquet"}) == [
        layout.out / ".a[1].parquet.tmp",
        layout.out / ".multidatabackend.json.tmp-1",
        layout.out / ".rejects.jsonl.tmp-42",
    ]
