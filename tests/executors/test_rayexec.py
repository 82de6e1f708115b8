"""The Ray executor (`convert --executor ray`): same bytes as the local pool, retries, resume across executors.

One local Ray instance (2 CPUs, no dashboard) is started for this module and reused by every test. Its
workers run a setup hook (`runtime_env`) that can make one attempt of a chosen shard die like an
OOM-killed process: the test drops `<shard>.armed` into the crash folder, the first worker to reach that
shard's commit renames it to `<shard>.fired` and exits at once. Production code has no hook for this.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import SynthSpec, write_corpus
from dalle3_etl.errors import MissingDependency
from dalle3_etl.run.pipeline import Reporter, run_convert
from dalle3_etl.settings import load_settings
from dalle3_etl.sources.resolve import resolve_inputs

REPO = Path(__file__).resolve().parents[2]
CRASH_DIR_VAR = "DALLE3_ETL_TEST_RAY_CRASH_DIR"
HINT = "the ray executor needs the ray package: pip install 'dalle3-etl[ray]'"


# -------------------------------------------------------------------------------------------------------
# helpers
# -------------------------------------------------------------------------------------------------------


def output_bytes(out: Path) -> dict[str, bytes]:
    """Every file a run leaves for the user (and the completion records), by relative path.

    multidatabackend.json names OUT by its absolute path, so that path is replaced by a placeholder.
    """
    files = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if not path.is_file():
            continue
        if rel.startswith(".dalle3-etl/") and not rel.startswith(".dalle3-etl/shards/"):
            continue
        data = path.read_bytes()
        if rel == "multidatabackend.json":
            data = data.replace(str(out.resolve()).encode(), b"<OUT>")
        files[rel] = data
    return files


def assert_same_output(out: Path, reference: Path) -> None:
    got, want = output_bytes(out), output_bytes(reference)
    assert sorted(got) == sorted(want)
    assert got["dalle3.parquet"] == want["dalle3.parquet"]
    assert [name for name in want if got[name] != want[name]] == []


def shard_paths(corpus_root: Path) -> list[Path]:
    return sorted(corpus_root.glob("data-*.tar"))


class Recorder(Reporter):
    def __init__(self):
        self.calls: list[tuple] = []

    def progress(self, shard_id: str, nbytes: int, samples: int) -> None:
        self.calls.append(("progress", shard_id, nbytes, samples))

    def shard_done(self, result) -> None:
        self.calls.append(("done", result.shard_id, result.ok))


def ctrl_c_when(path: Path, timeout: float = 60.0) -> threading.Thread:
    """Send this process SIGINT (Ctrl-C) as soon as `path` exists."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def ray_convert(inputs: list[Path], out: Path, reporter: Reporter | None = None, **opts):
    return run_convert(
        resolve_inputs([str(i) for i in inputs]),
        out,
        load_settings(None, workers=2),
        executor="ray",
        reporter=reporter,
        **opts,
    )


def local_convert(inputs: list[Path], out: Path):
    return run_convert(resolve_inputs([str(i) for i in inputs]), out, load_settings(None, workers=2))


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.pop(CRASH_DIR_VAR, None)
    return env


# -------------------------------------------------------------------------------------------------------
# the Ray instance of this module
# -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory):
    ray = pytest.importorskip("ray")
    crash_dir = tmp_path_factory.mktemp("ray-crash")

    def worker_setup() -> None:  # runs in every worker process; pickled by value (a nested function)
        import os
        import time
        from pathlib import Path

        from dalle3_etl.shard import convert as shard

        shard.PROGRESS_EVERY = 0  # report progress on every member, so tiny shards report some
        folder = os.environ.get("DALLE3_ETL_TEST_RAY_CRASH_DIR")
        if not folder:
            return
        commit = shard.ShardConverter.commit

        def commit_or_die(self):
            always = Path(folder) / f"{self.shard_id}.always"
            if always.exists():  # every attempt dies: count them
                with open(always.with_suffix(".attempts"), "a") as fh:
                    fh.write("x")
                os._exit(1)
            stall = Path(folder) / f"{self.shard_id}.stall"
            if stall.exists():  # a shard still running when the run is interrupted
                stall.with_suffix(".stalled").touch()
                time.sleep(120)
            armed = Path(folder) / f"{self.shard_id}.armed"
            try:
                armed.rename(armed.with_suffix(".fired"))
            except FileNotFoundError:
                return commit(self)
            os._exit(1)  # fully staged, nothing committed: like a worker killed mid-shard

        shard.ShardConverter.commit = commit_or_die

    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=128 << 20,
        logging_level="warning",
        runtime_env={"env_vars": {CRASH_DIR_VAR: str(crash_dir)}, "worker_process_setup_hook": worker_setup},
    )
    try:
        yield SimpleNamespace(ray=ray, crash_dir=crash_dir, address=ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


# -------------------------------------------------------------------------------------------------------
# without Ray
# -------------------------------------------------------------------------------------------------------


def test_without_ray_the_command_says_how_to_install_it(monkeypatch, corpus, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    from dalle3_etl.executors.ray import RayExecutor

    with pytest.raises(MissingDependency, match=r"pip install 'dalle3-etl\[ray\]'"):
        RayExecutor(None)
    root, _ = corpus
    result = CliRunner().invoke(app, ["convert", str(root), "-o", str(tmp_path / "o"), "--executor", "ray", "-q"])
    assert result.exit_code == 2, result.output
    assert HINT in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()  # refused before OUT is made: nothing pinned, no shard marked


# -------------------------------------------------------------------------------------------------------
# with Ray
# -------------------------------------------------------------------------------------------------------


def test_ray_output_is_byte_identical_to_the_local_executors(ray_instance, corpus, converted, tmp_path):
    root, _ = corpus
    reference, _, local_summary = converted
    recorder = Recorder()
    summary = ray_convert([root], tmp_path / "out", recorder)
    assert summary.exit_code == 0
    assert [(r.shard_id, r.ok, r.samples, r.rejects) for r in summary.results] == [
        (r.shard_id, r.ok, r.samples, r.rejects) for r in local_summary.results
    ]
    assert summary.rows == local_summary.rows
    assert_same_output(tmp_path / "out", reference)
    # progress: within each shard's size, and never after the shard was reported finished
    sizes = {p.name[: -len(".tar")]: p.stat().st_size for p in shard_paths(root)}
    assert any(c[0] == "progress" for c in recorder.calls)
    finished = set()
    for call in recorder.calls:
        if call[0] == "done":
            finished.add(call[1])
        else:
            _, shard_id, nbytes, samples = call
            assert shard_id not in finished and 0 < nbytes <= sizes[shard_id] and samples >= 0
    assert finished == set(sizes)


def test_a_killed_task_is_retried_and_the_output_is_still_identical(ray_instance, corpus, converted, tmp_path):
    root, _ = corpus
    reference, _, _ = converted
    armed = ray_instance.crash_dir / "data-000001.armed"
    armed.touch()
    summary = ray_convert([root], tmp_path / "out")
    assert (ray_instance.crash_dir / "data-000001.fired").exists() and not armed.exists()  # one attempt died
    assert summary.exit_code == 0 and all(r.ok and not r.failure for r in summary.results)
    assert_same_output(tmp_path / "out", reference)
    assert not any((tmp_path / "out" / ".dalle3-etl" / "staging").iterdir())


def test_a_shard_whose_task_always_dies_fails_after_the_retries(ray_instance, corpus, converted, tmp_path):
    from dalle3_etl.executors.ray import MAX_RETRIES

    root, _ = corpus
    reference, _, _ = converted
    always = ray_instance.crash_dir / "data-000002.always"
    always.touch()
    try:
        summary = ray_convert([root], tmp_path / "out")
    finally:
        always.unlink()
    assert summary.exit_code == 1
    assert [(r.shard_id, r.ok) for r in summary.results] == [
        ("data-000000", True),
        ("data-000001", True),
        ("data-000002", False),
    ]
    assert "Ray task failed" in summary.results[2].failure
    assert len((ray_instance.crash_dir / "data-000002.attempts").read_text()) == 1 + MAX_RETRIES
    assert (tmp_path / "out" / ".dalle3-etl" / "failed" / "data-000002.json").exists()
    # the next run redoes only that shard, and the dataset is the same
    summary = ray_convert([root], tmp_path / "out")
    assert summary.plan.skipped == ["data-000000", "data-000001"] and summary.exit_code == 0
    assert_same_output(tmp_path / "out", reference)


def test_unreachable_cluster_is_refused_at_once(monkeypatch):
    pytest.importorskip("ray")
    from dalle3_etl.executors import ray as rayexec

    calls = []

    def refuse(addr, timeout):
        calls.append(addr)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(rayexec.socket, "create_connection", refuse)  # no packet leaves the machine
    with pytest.raises(rayexec.RayConnectError, match="no Ray cluster answers at 203.0.113.9:6379"):
        rayexec._check_reachable("203.0.113.9:6379")
    for left_to_ray in ("auto", "ray://203.0.113.9:10001"):
        rayexec._check_reachable(left_to_ray)
    assert calls == [("203.0.113.9", 6379)]
    # a loopback address (the user forgot `ray start --head`): tried there and at the node's address
    monkeypatch.setattr(rayexec, "_node_ip", lambda: "198.51.100.7")
    with pytest.raises(rayexec.RayConnectError, match="no Ray cluster answers at localhost:6379"):
        rayexec._check_reachable("localhost:6379")
    assert calls[1:] == [("localhost", 6379), ("198.51.100.7", 6379)]


def test_a_loopback_address_answered_at_the_node_address_is_accepted(monkeypatch):
    from dalle3_etl.executors import ray as rayexec

    def answer_on_node_only(addr, timeout):
        if addr[0] != "198.51.100.7":
            raise ConnectionRefusedError(111, "Connection refused")
        return socket.socket()

    monkeypatch.setattr(rayexec.socket, "create_connection", answer_on_node_only)
    monkeypatch.setattr(rayexec, "_node_ip", lambda: "198.51.100.7")
    rayexec._check_reachable("127.0.0.1:6379")


@pytest.mark.parametrize("address", ["garbage", "localhost:1"])
def test_a_bad_or_unanswered_ray_address_is_refused_before_out_is_made(tmp_path, monkeypatch, address):
    from dalle3_etl.executors import ray as rayexec

    def refuse(addr, timeout):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(rayexec.socket, "create_connection", refuse)
    monkeypatch.setenv("RAY_ADDRESS", address)
    write_corpus(tmp_path / "in", SynthSpec(shards=1, per_shard=3, seed=1, image_bytes=300))
    result = CliRunner().invoke(
        app, ["convert", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--executor", "ray"]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "out").exists()  # nothing pinned, no shard marked


def test_resume_started_with_local_finished_with_ray(ray_instance, corpus, converted, tmp_path):
    root, _ = corpus
    reference, _, _ = converted
    first = shard_paths(root)[:1]
    assert local_convert(first, tmp_path / "out").exit_code == 0
    summary = ray_convert([root], tmp_path / "out")
    assert summary.plan.skipped == ["data-000000"]
    assert sorted(r.shard_id for r in summary.results) == ["data-000001", "data-000002"]
    assert_same_output(tmp_path / "out", reference)


def running_ray_tasks() -> list[str]:
    """Process titles of Ray tasks on this machine ("ray::convert data-000002")."""
    titles = []
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::convert"):
            titles.append(title)
    return titles


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="lists Ray task processes through /proc (Linux)")
def test_resume_ray_interrupted_then_finished_with_local(ray_instance, corpus, converted, tmp_path):
    root, _ = corpus
    reference, _, _ = converted
    stall = ray_instance.crash_dir / "data-000002.stall"
    stall.touch()  # data-000002 stops before its commit, and Ctrl-C comes then
    watcher = ctrl_c_when(ray_instance.crash_dir / "data-000002.stalled")
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            ray_convert([root], tmp_path / "out")
    finally:
        stall.unlink()
        watcher.join()
    assert time.monotonic() - start < 60  # did not wait for the stalled task
    state = tmp_path / "out" / ".dalle3-etl"
    assert (state / "staging" / "data-000002").is_dir() and not (state / "shards" / "data-000002.json").exists()
    assert not any("data-000002" in t for t in running_ray_tasks())  # cancelled: its worker was killed
    # finish with the local executor: the interrupted shard is redone, the finished ones are kept
    summary = local_convert([root], tmp_path / "out")
    assert summary.exit_code == 0 and "data-000002" not in summary.plan.skipped and summary.plan.skipped
    assert_same_output(tmp_path / "out", reference)


def test_cli_with_ray_address_connects_to_the_cluster(ray_instance, corpus, converted, tmp_path):
    root, _ = corpus
    reference, _, _ = converted
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dalle3_etl",
            "convert",
            str(root),
            "-o",
            str(out),
            "--executor",
            "ray",
            "--ray-address",
            ray_instance.address,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=cli_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert_same_output(out, reference)


def test_cli_without_address_starts_and_stops_a_local_instance(ray_instance, corpus, converted, tmp_path):
    root, _ = corpus
    reference, _, _ = converted
    out = tmp_path / "out"
    shards = shard_paths(root)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dalle3_etl",
            "convert",
            *map(str, shards[:2]),
            "-o",
            str(out),
            "--executor",
            "ray",
            "--workers",
            "2",
            "-q",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=cli_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Token authentication" not in proc.stderr
    # then finish the last shard with the local executor: the same dataset
    summary = local_convert([root], out)
    assert summary.plan.skipped == ["data-000000", "data-000001"]
    assert_same_output(out, reference)


def _workers_lock_free(out: Path) -> bool:
    import fcntl

    fd = os.open(out / ".dalle3-etl" / "workers.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_a_running_task_holds_the_workers_lock_so_a_new_run_waits_for_it(ray_instance, corpus, tmp_path):
    """As pool workers do: a new run on OUT after this driver died waits until its tasks are gone."""
    root, _ = corpus
    out = tmp_path / "out"
    stall = ray_instance.crash_dir / "data-000001.stall"
    stalled = ray_instance.crash_dir / "data-000001.stalled"
    stall.touch()
    seen = {}

    def look_then_interrupt() -> None:
        deadline = time.monotonic() + 60
        while not stalled.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen["free while the task runs"] = _workers_lock_free(out)
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=look_then_interrupt, daemon=True)
    watcher.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            ray_convert([root], out)
    finally:
        stall.unlink()
        stalled.unlink(missing_ok=True)
        watcher.join()
    assert seen == {"free while the task runs": False}
    deadline = time.monotonic() + 30
    while not _workers_lock_free(out) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _workers_lock_free(out)  # the cancelled task let go of it
