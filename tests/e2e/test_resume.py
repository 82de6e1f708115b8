"""Resumable, crash-safe runs (issue 3).

Real `python -m dalle3_etl convert` processes, each in its own session, are stopped at named points by
the test hook `DALLE3_ETL_TEST_CRASH` (see `store.crash.crash_point`): SIGKILL of the whole process tree,
of one worker, of the driver alone, or a stall that keeps a run busy. Then the same command is run
again and the output must be exactly that of an uninterrupted run, with nothing temporary left.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import convert
from typer.testing import CliRunner

from dalle3_etl.check.status import shard_states
from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import SynthSpec, write_corpus, write_shard
from dalle3_etl.store.layout import Layout

REPO = Path(__file__).resolve().parents[2]
SPEC = SynthSpec(shards=4, per_shard=25, seed=11, image_bytes=1000)
SHARDS = [f"data-00000{i}" for i in range(4)]
runner = CliRunner()


# --- helpers ---------------------------------------------------------------------------------------


def _env(crash: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DALLE3_ETL_TEST_CRASH"}
    env["COLUMNS"] = "300"
    if crash:
        env["DALLE3_ETL_TEST_CRASH"] = crash
    return env


def start_convert(inputs, out: Path, *options: str, crash: str | None = None, **popen) -> subprocess.Popen:
    """`python -m dalle3_etl convert` in a new session: its process group is the whole run."""
    args = [sys.executable, "-m", "dalle3_etl", "convert", *map(str, inputs), "-o", str(out), *options]
    popen.setdefault("stdout", subprocess.PIPE)
    return subprocess.Popen(
        args, cwd=REPO, env=_env(crash), start_new_session=True, stderr=subprocess.STDOUT, text=True, **popen
    )


def run_convert_cli(inputs, out: Path, *options: str, crash: str | None = None, **popen) -> tuple[int, str]:
    proc = start_convert(inputs, out, *options, crash=crash, **popen)
    output, _ = proc.communicate(timeout=180)
    return proc.returncode, output


def invoke(*args: str) -> tuple[int, str]:
    """The CLI in this process (resumed runs use one worker: no pool to start)."""
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})  # no wrapped lines
    return result.exit_code, result.output


def wait_until(condition, what: str, timeout: float = 60.0) -> None:
    """Hang guard for polling a marker; not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of a session."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            pids.append(int(entry.name))
    return pids


def records(out: Path) -> list[str]:
    folder = Layout(out).records_dir
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def data_files(out: Path) -> dict[str, bytes]:
    root = out / "data"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_output(out: Path, ref: Path) -> None:
    assert (out / "dalle3.parquet").read_bytes() == (ref / "dalle3.parquet").read_bytes(), "dalle3.parquet differs"
    assert (out / "rejects.jsonl").read_bytes() == (ref / "rejects.jsonl").read_bytes(), "rejects.jsonl differs"
    got, want = data_files(out), data_files(ref)
    assert sorted(set(got) ^ set(want)) == [], "files under OUT/data differ"
    assert [name for name in want if got[name] != want[name]] == [], "file contents under OUT/data differ"


def leftovers(out: Path, flat: bool = False) -> list[str]:
    """Temporary or orphaned files: temp names, staging, pending images, output of shards without a record."""
    state = Layout(out).state
    found = [
        str(p.relative_to(out))
        for p in out.rglob("*")
        if (p.name.startswith(".") and ".tmp" in p.name) or p.name == "pending"
    ]
    for sub in ("staging", "flat", "trash", "failed"):
        if (state / sub).is_dir():
            found += [str(p.relative_to(out)) for p in (state / sub).iterdir()]
    done = set(records(out))
    for sub, suffix in (("parts", ".parquet"), ("rejects", ".jsonl")):
        found += [
            str(p.relative_to(out)) for p in (state / sub).glob(f"*{suffix}") if p.name[: -len(suffix)] not in done
        ]
    if not flat:
        found += [str(p.relative_to(out)) for p in (out / "data").iterdir() if p.name not in done]
    return found


def resume(inputs, out: Path, *options: str, skipped: int | None = None) -> str:
    """Re-run the same command; check it succeeds and says how many complete shards it skips
    (by default: every shard with a record, inputs unchanged)."""
    complete = len(records(out)) if skipped is None else skipped
    code, output = invoke("convert", *inputs, "-o", out, "-w", "1", *options)
    assert code == 0, output
    if complete:
        assert f"Resuming: {complete} shard(s) already complete" in output
    else:
        assert "Resuming" not in output
    return output


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume-corpus")
    write_corpus(root, SPEC)
    return root


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("resume-ref") / "out"
    assert convert([corpus], out, workers=1).exit_code == 0
    return out


# --- SIGKILL of the whole process tree --------------------------------------------------------------


def _in_flight(out: Path) -> bool:
    layout = Layout(out)
    return layout.staging("data-000001").is_dir() and not layout.record("data-000001").exists()


def _staged(out: Path) -> bool:
    layout = Layout(out)
    return (layout.staging("data-000002") / "part.parquet").exists() and not layout.record("data-000002").exists()


def _mid_commit(out: Path) -> bool:
    layout = Layout(out)
    return (
        layout.shard_data("data-000001").is_dir()
        and not layout.part("data-000001").exists()
        and not layout.record("data-000001").exists()
    )


def _committed_no_record(out: Path) -> bool:
    layout = Layout(out)
    return (
        layout.shard_data("data-000001").is_dir()
        and layout.part("data-000001").exists()
        and not layout.record("data-000001").exists()
    )


def _two_records(out: Path) -> bool:
    return records(out) == SHARDS[:2] and not (out / "dalle3.parquet").exists()


def _rejects_merged(out: Path) -> bool:
    return records(out) == SHARDS and (out / "rejects.jsonl").exists() and not (out / "dalle3.parquet").exists()


def _parquet_tmp(out: Path) -> bool:
    return (out / ".dalle3.parquet.tmp").stat().st_size > 0 and not (out / "dalle3.parquet").exists()


@pytest.mark.parametrize(
    "crash, workers, state",
    [
        pytest.param("sample:data-000001:10", "2", _in_flight, id="shards-in-flight"),
        pytest.param("staged:data-000002", "2", _staged, id="staged-not-committed"),
        pytest.param("commit:data-000001", "1", _mid_commit, id="mid-commit"),
        pytest.param("committed:data-000001", "1", _committed_no_record, id="committed-no-record"),
        pytest.param("recorded:data-000001", "1", _two_records, id="between-shards"),
        pytest.param("merge:rejects", "1", _rejects_merged, id="merge-rejects-only"),
        pytest.param("merge:parquet", "2", _parquet_tmp, id="merge-tmp-not-renamed"),
    ],
)
def test_sigkill_of_the_process_tree_then_rerun_gives_the_uninterrupted_output(
    corpus, reference, tmp_path, crash, workers, state
):
    out = tmp_path / "out"
    code, log = run_convert_cli([corpus], out, "-w", workers, crash=crash)
    assert code == -signal.SIGKILL, log
    assert state(out), f"the run did not stop where expected; records: {records(out)}"
    resume([corpus], out)
    assert_same_output(out, reference)
    assert leftovers(out) == []
    assert {sid: st["state"] for sid, st in shard_states(out).items()} == dict.fromkeys(SHARDS, "done")


def test_a_worker_killed_alone_fails_only_the_shards_in_flight_and_the_rerun_completes(corpus, reference, tmp_path):
    """The OOM killer takes one worker: that breaks the pool; shards not started yet go on in a new
    pool, the run reports the shards that were in flight as failed and exits 1; the re-run repairs."""
    out = tmp_path / "out"
    code, log = run_convert_cli([corpus], out, "-w", "2", crash="killself@sample:data-000000:1")
    assert code == 1, log
    assert "FAILED data-000000: worker process died" in log
    states = {sid: st["state"] for sid, st in shard_states(out).items()}
    assert states["data-000000"] == "failed"
    assert states["data-000002"] == states["data-000003"] == "done"  # queued when the worker died
    resume([corpus], out)
    assert_same_output(out, reference)
    assert leftovers(out) == []


NEEDS_PROC = pytest.mark.skipif(not Path("/proc").is_dir(), reason="lists a session's processes through /proc (Linux)")


@NEEDS_PROC
def test_killing_only_the_driver_stops_its_workers_before_a_new_run_starts(corpus, reference, tmp_path):
    """Pool workers are not the driver's children; without a watchdog they would live on and commit
    shards under the next run's feet."""
    out = tmp_path / "out"
    proc = start_convert([corpus], out, "-w", "2", crash="stall@sample:data-000001:5", stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: Layout(out).record("data-000000").exists(), "the first shard to complete")
        assert len(session_processes(proc.pid)) > 1  # the driver and its pool
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        resume([corpus], out)  # at once: the new run must not race a worker of the dead one
        wait_until(lambda: not session_processes(proc.pid), "the dead driver's workers to exit", timeout=30)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if session_processes(proc.pid) else None
    assert_same_output(out, reference)
    assert leftovers(out) == []


# --- lock ------------------------------------------------------------------------------------------


def test_second_run_is_refused_while_one_runs_and_a_dead_runs_lock_is_taken_over(corpus, reference, tmp_path):
    out = tmp_path / "out"
    proc = start_convert([corpus], out, "-w", "1", crash="stall@recorded:data-000001", stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: Layout(out).record("data-000001").exists(), "two shards to complete")
        code, output = invoke("convert", corpus, "-o", out, "-w", "1")
        assert code == 2, output
        assert "another dalle3-etl run is using" in output and f" {proc.pid})" in output
        code, output = invoke("status", out)
        assert code == 0 and f"in progress (lock held by {os.uname().nodename} {proc.pid})" in output
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert Layout(out).lock.read_text().split() == [os.uname().nodename, str(proc.pid)]  # left by a dead process
    code, output = invoke("status", out)
    assert "in progress" not in output
    samples = sum(shard_states(reference)[sid]["samples"] for sid in SHARDS[:2])
    assert f"done 2, damaged 0, failed 0, pending 2; {samples} samples" in output
    assert "dalle3.parquet: not written yet" in output
    resume([corpus], out)
    assert_same_output(out, reference)
    assert leftovers(out) == []


# --- Ctrl-C ----------------------------------------------------------------------------------------


@NEEDS_PROC
@pytest.mark.parametrize(
    "how, code",
    [
        ("SIGINT to the process group (Ctrl-C)", 130),
        ("SIGTERM to the driver (kill, docker stop)", 143),
        ("SIGTERM to the process group (systemd)", 143),
    ],
)
def test_ctrl_c_or_sigterm_stops_promptly_keeps_completed_shards_and_the_rerun_finishes(tmp_path, how, code):
    corpus = tmp_path / "in"
    write_corpus(corpus, SynthSpec(shards=4, per_shard=150, seed=3, image_bytes=4000))
    ref = tmp_path / "ref"
    assert convert([corpus], ref, workers=1).exit_code == 0
    out = tmp_path / "out"
    # the last shard hangs after one sample: the run cannot finish before the interrupt
    proc = start_convert([corpus], out, "-w", "2", crash="stall@sample:data-000003:1")
    try:
        wait_until(lambda: records(out), "a shard to complete")
        before = set(records(out))
        kept = {name: data for name, data in data_files(out).items() if name.split("/")[0] in before}
        sent = time.monotonic()
        if how.startswith("SIGINT"):
            os.killpg(proc.pid, signal.SIGINT)
        elif "group" in how:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        stopped_after = time.monotonic() - sent
        wait_until(lambda: not session_processes(proc.pid), "the workers to exit", timeout=30)
    finally:
        if session_processes(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    print(f"{how}: exit {proc.returncode} {stopped_after:.2f}s after the signal")
    assert proc.returncode == code, output
    assert "Interrupted." in output and "Run the same command again to resume" in output
    assert before <= set(records(out))
    now = data_files(out)
    assert {name: now.get(name) for name in kept} == kept  # nothing that completed was removed or changed
    resume([corpus], out)
    assert_same_output(out, ref)
    assert leftovers(out) == []


# --- settings --------------------------------------------------------------------------------------


def test_output_changing_settings_are_refused_until_restart_worker_count_is_not(corpus, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = data_files(out), (out / "dalle3.parquet").read_bytes()

    code, output = invoke("convert", corpus, "-o", out, "-w", "1", "--no-captions")
    assert code == 2
    assert "captions: was True, now False" in output and "--captions/--no-captions" in output and "--restart" in output
    code, output = invoke("convert", corpus, "-o", out, "-w", "1", "--caption-field", "long_caption")
    assert code == 2
    assert "caption_field: was 'short_caption', now 'long_caption'" in output and "--caption-field" in output
    assert (data_files(out), (out / "dalle3.parquet").read_bytes()) == before  # a refused run touches nothing

    code, output = invoke("convert", corpus, "-o", out, "-w", "2")
    assert code == 0 and "Resuming: 4 shard(s) already complete" in output and "Converting" not in output
    assert_same_output(out, reference)

    code, output = invoke("convert", corpus, "-o", out, "-w", "1", "--no-captions", "--restart")
    assert code == 0, output
    files = data_files(out)
    assert not [n for n in files if n.endswith(".txt")]
    assert files == {n: b for n, b in data_files(reference).items() if not n.endswith(".txt")}
    assert pq.read_table(out / "dalle3.parquet").equals(pq.read_table(reference / "dalle3.parquet"))
    code, output = invoke("convert", corpus, "-o", out, "-w", "1", "--no-captions")
    assert code == 0 and "Resuming: 4 shard(s) already complete" in output
    assert leftovers(out) == []


def test_a_killed_restart_leaves_no_mix_of_old_and_new_output(corpus, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    code, log = run_convert_cli([corpus], out, "-w", "1", "--no-captions", "--restart", crash="restart:data-000001")
    assert code == -signal.SIGKILL, log
    assert records(out) == []  # every record went first, then the files shard by shard
    assert sorted(p.name for p in (out / "data").iterdir()) == SHARDS[2:]  # OUT/data itself is never removed
    code, output = invoke("convert", corpus, "-o", out, "-w", "1", "--no-captions")
    assert code == 2 and "--restart" in output  # the restart did not finish: still pinned to the old settings
    resume([corpus], out)  # the old settings: every shard is redone
    assert_same_output(out, reference)
    assert leftovers(out) == []


# --- changed and added inputs ------------------------------------------------------------------------


def test_added_shard_is_merged_in_and_changed_input_is_redone(corpus, reference, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    for sid in SHARDS[:3]:
        shutil.copy2(corpus / f"{sid}.tar", inp)
    out = tmp_path / "out"
    assert convert([inp], out, workers=1).exit_code == 0

    shutil.copy2(corpus / "data-000003.tar", inp)  # a shard published later
    output = resume([inp], out)
    assert "Converting 1 shard(s)" in output
    assert_same_output(out, reference)  # = converting all four in one go

    shard = inp / "data-000002.tar"
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched: mtime differs
    output = resume([inp], out, skipped=3)
    assert "Converting 1 shard(s)" in output
    assert_same_output(out, reference)

    write_shard(shard, SynthSpec(per_shard=25, seed=99, image_bytes=1500), 2)  # new content, new size
    output = resume([inp], out, skipped=3)
    assert "Converting 1 shard(s)" in output
    fresh = tmp_path / "fresh"
    assert convert([inp], fresh, workers=1).exit_code == 0
    assert_same_output(out, fresh)  # no file of the old shard 2 survives
    assert (out / "dalle3.parquet").read_bytes() != (reference / "dalle3.parquet").read_bytes()
    assert leftovers(out) == []


# --- failed and damaged shards, --retry-failed -------------------------------------------------------------


def _damage(path: Path, member_index: int) -> bytes:
    """Overwrite one member header in place (same size); return the good bytes."""
    good = path.read_bytes()
    with tarfile.open(path) as tf:
        offset = tf.getmembers()[member_index].offset
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * 100)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return good


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # like a full disk: writes fail with EFBIG


def test_failed_and_damaged_shards_plain_rerun_and_retry_failed(tmp_path):
    inp = tmp_path / "in"
    write_corpus(inp, SPEC)
    write_shard(inp / "data-000002.tar", SynthSpec(per_shard=25, seed=11, image_bytes=150_000), 2)  # big images
    good1 = _damage(inp / "data-000001.tar", 20)
    out = tmp_path / "out"

    # 1. shard 2 cannot be written (file size limit): failed, nothing committed; shard 1 is damaged
    code, log = run_convert_cli([inp], out, "-w", "1", preexec_fn=_limit_file_size)
    assert code == 1, log
    assert "FAILED data-000002" in log and "DAMAGED data-000001" in log
    states = shard_states(out)
    assert {sid: st["state"] for sid, st in states.items()} == {
        "data-000000": "done",
        "data-000001": "damaged",
        "data-000002": "failed",
        "data-000003": "done",
    }
    assert not (out / "data" / "data-000002").exists()
    assert "File too large" in states["data-000002"]["detail"]
    code, output = invoke("status", out)
    assert "done 2, damaged 1, failed 1, pending 0" in output

    # 2. --retry-failed: redoes the failed and the damaged shard only; a shard never converted is left out
    write_corpus(inp, SynthSpec(shards=1, per_shard=25, seed=11, image_bytes=1000, first_shard=4))
    code, output = invoke("convert", inp, "-o", out, "-w", "1", "--retry-failed")
    assert code == 1, output  # shard 1 is still damaged, shard 4 not converted
    assert "Converting 2 shard(s)" in output and "DAMAGED data-000001" in output
    assert "--retry-failed: 1 shard(s) never converted are left for a plain run: data-000004" in output
    assert records(out) == SHARDS and shard_states(out)["data-000002"]["state"] == "done"
    code, status = invoke("status", out)  # the shard left for a plain run is known, as pending
    assert "pending 1" in status and "data-000004" in status, status

    # 3. the input is repaired in place, same size and mtime (like a transient read error): a plain
    #    re-run converts the new shard, keeps the damaged one as it is, says so and exits 1
    shard = inp / "data-000001.tar"
    st = shard.stat()
    shard.write_bytes(good1)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    damaged_rows = pq.read_metadata(out / "dalle3.parquet").num_rows
    code, output = invoke("convert", inp, "-o", out, "-w", "1")
    assert code == 1, output
    assert "Resuming: 4 shard(s) already complete" in output and "Converting 1 shard(s)" in output
    assert "1 of them damaged in an earlier run" in output
    assert "input shard(s) incomplete from earlier runs: data-000001 (damaged)" in output
    assert pq.read_metadata(out / "dalle3.parquet").num_rows == damaged_rows + 25

    # 4. --retry-failed reads it again: now the dataset equals converting the repaired inputs in one go
    code, output = invoke("convert", inp, "-o", out, "-w", "1", "--retry-failed")
    assert code == 0, output
    assert "Converting 1 shard(s)" in output and "never converted" not in output
    fresh = tmp_path / "fresh"
    assert convert([inp], fresh, workers=1).exit_code == 0
    assert_same_output(out, fresh)
    assert leftovers(out) == []

    code, output = invoke("convert", "--help")  # and the help says what a plain re-run does
    assert "keeps damaged ones unless their input changed" in " ".join(output.split())


# --- --flat: publish in shard order, crash-safe -------------------------------------------------------------


@pytest.fixture(scope="module")
def flat_corpus(tmp_path_factory) -> Path:
    """Four shards; the last reuses 15 names of shard 2 (clashes in a flat folder)."""
    root = tmp_path_factory.mktemp("flat-corpus")
    write_corpus(root, SynthSpec(shards=3, per_shard=25, seed=5, image_bytes=800))
    write_shard(root / "data-000003.tar", SynthSpec(per_shard=25, seed=6, image_bytes=800, start_index=10), 2)
    return root


@pytest.fixture(scope="module")
def flat_reference(flat_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("flat-ref") / "out"
    assert convert([flat_corpus], out, workers=1, flat=True).exit_code == 0
    rejects = (out / "rejects.jsonl").read_text()
    assert rejects.count('"name_clash"') >= 10  # the corpus does what it says (a few clashing samples have no caption)
    return out


@pytest.mark.parametrize(
    "crash",
    [
        pytest.param("committed:data-000002", id="committed-no-record"),
        pytest.param("publish:data-000001:3", id="mid-publish-linked-not-unlinked"),
        pytest.param("publish:data-000003:3", id="mid-publish-of-a-shard-with-clashes"),
        pytest.param("publish_part:data-000003", id="clash-part-rewritten-record-not"),
    ],
)
def test_flat_sigkill_then_rerun_gives_the_uninterrupted_output(flat_corpus, flat_reference, tmp_path, crash):
    out = tmp_path / "out"
    code, log = run_convert_cli([flat_corpus], out, "-w", "1", "--flat", crash=crash)
    assert code == -signal.SIGKILL, log
    resume([flat_corpus], out, "--flat")
    assert_same_output(out, flat_reference)
    assert leftovers(out, flat=True) == []
    ref_states, states = shard_states(flat_reference), shard_states(out)
    assert states == ref_states  # samples and rejects counted once, clashes included
