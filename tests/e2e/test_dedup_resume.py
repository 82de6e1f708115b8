"""--dedup across runs: SIGKILL then resume, 2 worker processes, shards added later (one sorting first): the
output is always byte for byte that of one uninterrupted run over the same inputs (parquet, rejects.jsonl,
files under OUT/data), and verify passes.

The synthetic corpus (test_resume's: 4 shards of 25 samples) has `md5_pil_hash` the md5 of solid-colour
pixels, one per (format, size): most samples repeat one, within their shard and across shards.
"""

from __future__ import annotations

import signal
from pathlib import Path

import orjson
import pytest
from conftest import convert
from test_resume import assert_same_output, corpus, data_files, invoke, leftovers, run_convert_cli  # noqa: F401

from dalle3_etl.check.verify import verify
from dalle3_etl.store.layout import Layout

DEDUP = ("--dedup", "md5_pil_hash")


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    """One uninterrupted run over the four shards."""
    out = tmp_path_factory.mktemp("dedup-ref") / "out"
    assert convert([corpus], out, workers=1, dedup="md5_pil_hash").exit_code == 0
    rejects = [orjson.loads(line) for line in (out / "rejects.jsonl").read_bytes().splitlines()]
    dups = {r["shard"] for r in rejects if r["reason"] == "duplicate"}
    assert dups == {f"data-00000{i}" for i in range(4)}  # the corpus has duplicates in every shard
    return out


def _shards(corpus: Path, *indexes: int) -> list[Path]:
    return [corpus / f"data-00000{i}.tar" for i in indexes]


def _resume(inputs, out: Path) -> None:
    code, output = invoke("convert", *inputs, "-o", out, "-w", "1", *DEDUP)
    assert code == 0, output


def _check(out: Path, reference: Path) -> None:
    assert_same_output(out, reference)
    assert leftovers(out) == []
    assert verify(out).ok


@pytest.mark.parametrize(
    "crash, workers",
    [
        pytest.param("sample:data-000001:2", "2", id="shards-in-flight"),
        pytest.param("committed:data-000002", "1", id="committed-no-record"),
        pytest.param("dedup:data-000002", "1", id="merge-after-moving-a-shards-duplicates"),
        pytest.param("merge:rejects", "2", id="merge-rejects-only"),
        pytest.param("merge:parquet", "1", id="merge-tmp-not-renamed"),
    ],
)
def test_sigkill_then_resume_gives_the_one_run_output(corpus, reference, tmp_path, crash, workers):
    out = tmp_path / "out"
    code, log = run_convert_cli([corpus], out, "-w", workers, *DEDUP, crash=crash)
    assert code == -signal.SIGKILL, log
    _resume([corpus], out)
    _check(out, reference)


def test_two_worker_processes_give_the_one_worker_output(corpus, reference, tmp_path):
    out = tmp_path / "out"
    code, log = run_convert_cli([corpus], out, "-w", "2", *DEDUP)
    assert code == 0, log
    _check(out, reference)


def test_a_shard_added_later_that_sorts_first_takes_the_first_occurrences(corpus, reference, tmp_path):
    """Samples of data-000001 kept by the first run repeat data-000000's: they become duplicates, and their
    image and caption file leave OUT/data."""
    out = tmp_path / "out"
    _resume(_shards(corpus, 1, 2, 3), out)
    before = data_files(out)
    assert verify(out).ok
    _resume(_shards(corpus, 0, 1, 2, 3), out)
    _check(out, reference)
    gone = sorted(name for name in set(before) - set(data_files(out)) if name.startswith("data-000001/"))
    assert gone and all((Layout(out).held("data-000001") / name.split("/", 1)[1]).is_file() for name in gone)


def test_sigkill_while_a_merge_moves_files_out_after_a_shard_was_added(corpus, reference, tmp_path):
    out = tmp_path / "out"
    _resume(_shards(corpus, 1, 2, 3), out)
    code, log = run_convert_cli(_shards(corpus, 0, 1, 2, 3), out, "-w", "1", *DEDUP, crash="dedup:data-000001")
    assert code == -signal.SIGKILL, log
    _resume(_shards(corpus, 0, 1, 2, 3), out)
    _check(out, reference)
