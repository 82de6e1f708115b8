"""Run shard conversions as Ray tasks: `convert --executor ray [--ray-address ADDR]`.

Each shard is one Ray task that runs the same `executors.base.run_task` as the local pool, so the output
bytes are the same. The driver (this process) submits every shard, waits on them with `ray.wait`,
hands each finished `ShardResult` to `on_result` and, like with any executor, merges afterwards
(`pipeline`). Workers write straight into OUT: OUT and the input shards must be reachable at the same
absolute paths from every node, i.e. on a shared filesystem (docs/ray.md).

Which Ray: with an address (`--ray-address`, else the RAY_ADDRESS variable) the driver connects to that
cluster and only disconnects at the end. Without one it starts a private local instance (no dashboard,
`--workers` CPUs, default all cores) for the run and shuts it down afterwards. A process that already
called `ray.init` (a notebook, a test) keeps its connection and its instance.

A task whose worker process or node dies is rerun by Ray (`MAX_RETRIES`); a shard that still cannot be
converted comes back as a failed result, and the next run redoes it. Byte progress within a shard is
reported by the workers to a small actor that the driver polls (best effort). Ctrl-C cancels every
outstanding task (their shards stay incomplete and are redone by the next run, with either executor).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import threading
from typing import Any

from dalle3_etl import __version__
from dalle3_etl.errors import UsageError
from dalle3_etl.executors.base import ProgressCb, ResultCb, ShardTask, run_task
from dalle3_etl.executors.pool import default_workers
from dalle3_etl.optional import require
from dalle3_etl.shard.convert import ShardResult
from dalle3_etl.store.locks import workers_lock_held

MAX_RETRIES = 3  # reruns of a task whose worker process or node died (OOM killer, lost node)
# Exceptions that escape a task and are worth another try. `run_task` reports a shard's own errors as a
# failed result instead of raising, so in practice these are errors of the task's own plumbing.
TRANSIENT_ERRORS = (ConnectionError, TimeoutError)
WAIT_SECONDS = 0.2  # driver poll interval: finished tasks and progress
CANCEL_WAIT_SECONDS = 10.0  # after Ctrl-C, how long to wait for cancelled tasks to stop
CONNECT_CHECK_SECONDS = 5.0  # a cluster address must answer within this (see `_check_reachable`)
LOCAL_OBJECT_STORE_BYTES = 128 << 20  # a local instance only moves task descriptions and results (a few KB)


def import_ray() -> Any:
    """`import ray`, or a MissingDependency that says how to install it (the CLI shows it as a usage error)."""
    return require("ray", "ray", "the ray executor")


@contextlib.contextmanager
def _ctrl_c_deferred():
    """Hold Ctrl-C while `ray.init` runs: interrupted half-way, it leaves Ray's threads in a state that
    crashes the interpreter at exit (SIGSEGV instead of exit code 130). Yields `interrupted()`."""
    hits: list[int] = []
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield lambda: False
        return
    signal.signal(signal.SIGINT, lambda signum, frame: hits.append(signum))
    try:
        yield lambda: bool(hits)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def _quiet_token_notice():
    """Ray >= 2.5x logs a warning that token authentication is on each time it starts a local instance;
    for the private instance of one run that is noise (the instance keeps token authentication)."""
    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


class RayConnectError(UsageError, RuntimeError):
    """The Ray cluster named by --ray-address (or RAY_ADDRESS) could not be reached or started."""


class _ProgressBoard:
    """Latest (bytes read, samples written) per running shard; workers report, the driver drains."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[int, int]] = {}

    def report(self, shard_id: str, nbytes: int, samples: int) -> None:
        self.latest[shard_id] = (nbytes, samples)

    def drain(self) -> dict[str, tuple[int, int]]:
        latest, self.latest = self.latest, {}
        return latest


def _shard_task(task: ShardTask, board: Any, driver_version: str) -> ShardResult:
    """The body of one Ray task, on a worker: the same `run_task` as the local pool."""
    if __version__ != driver_version:  # another version could write other bytes into the same dataset
        return ShardResult(
            shard_id=task.source.shard_id,
            ok=False,
            failure=f"this Ray node has dalle3-etl {__version__}, the driver {driver_version}: "
            "install the same version on every node",
        )
    # Held during the task: a new run on OUT (after this run's driver was killed) waits until this
    # task is gone, so it cannot commit a shard under the new run's feet.
    held = workers_lock_held(task.workers_lock) if task.workers_lock is not None else contextlib.nullcontext()
    with held:  # a dry run (no lock) never writes into OUT
        return run_task(task, _reporter(board) if board is not None else None)


def _reporter(board: Any) -> ProgressCb:
    def report(shard_id: str, nbytes: int, samples: int) -> None:
        try:
            board.report.remote(shard_id, nbytes, samples)  # fire and forget
        except Exception:
            pass  # progress is best effort

    return report


def check_address(address: str | None) -> None:
    """Before OUT is touched (`run.pipeline`): Ray is installed, and the cluster `--ray-address` (or RAY_ADDRESS) names is one Ray can
    connect to and someone answers at; none: a private local instance, nothing to check. A RayConnectError
    (exit 2) otherwise, so a mistyped address or a cluster not started pins nothing and marks no shard."""
    import_ray()  # not installed: MissingDependency (exit 2), before OUT is made too
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        return
    if address not in ("auto", "local") and "://" not in address and not _HOST_PORT.fullmatch(address):
        raise RayConnectError(
            f"Ray address {address!r} (--ray-address or RAY_ADDRESS) is not host:port, ray://host:port, auto or local"
        )
    _check_reachable(address)


#: `host:port` as Ray takes a cluster address (an IPv6 host in brackets).
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}")


def _check_reachable(address: str) -> None:
    """Fail fast on a `host:port` nobody answers at: `ray.init` itself retries for minutes, deaf to Ctrl-C.

    A loopback address is tried at 127.0.0.1 and at this machine's own address (Ray maps loopback to the node's
    address, where its GCS may be all that listens); "auto" and "ray://" client addresses are left to Ray.
    """
    if "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit():
        return
    loopback = host in ("localhost", "") or host.startswith("127.") or host == "::1"
    failure: OSError | None = None
    for candidate in dict.fromkeys((host, _node_ip()) if loopback else (host,)):
        if candidate is None:
            continue
        try:
            socket.create_connection((candidate, int(port)), timeout=CONNECT_CHECK_SECONDS).close()
            return
        except OSError as exc:
            failure = failure or exc
    raise RayConnectError(
        f"no Ray cluster answers at {address} ({failure.strerror or failure}); start one with `ray start --head` "
        "on the head node and pass the address it prints"
    )


def _node_ip() -> str | None:
    """This machine's address on its default route, as Ray finds it (no packet is sent); None without one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the route
            return probe.getsockname()[0]
    except OSError:
        return None


class RayExecutor:
    """Shards as Ray tasks on a cluster (`address`) or on a private local instance (no address)."""

    def __init__(self, address: str | None = None, *, workers: int | None = None, progress: bool = True):
        self.ray = import_ray()
        self.address = address or None
        self.workers = workers  # CPUs of a local instance; default: the settings' workers, else all cores
        self.progress = progress

    # -- connection ---------------------------------------------------------------------------------

    def _connect(self, tasks: list[ShardTask]) -> bool:
        """Connect this process to Ray; True when this call did (and so `run` disconnects afterwards)."""
        ray = self.ray
        if ray.is_initialized():
            return False
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if address:
            check_address(address)
        try:
            with _ctrl_c_deferred() as interrupted:
                if address:
                    ray.init(address=address, logging_level=logging.WARNING)
                else:
                    cpus = self.workers or tasks[0].settings.workers or default_workers()
                    with _quiet_token_notice():
                        ray.init(
                            address="local",
                            num_cpus=cpus,
                            include_dashboard=False,
                            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                            logging_level=logging.WARNING,
                        )
        except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
            if not address:
                raise RayConnectError(f"could not start a local Ray instance: {exc}") from exc
            hint = ""
            if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
                hint = (
                    "; if the cluster uses token authentication, set RAY_AUTH_MODE=token and its token "
                    "(RAY_AUTH_TOKEN or ~/.ray/auth_token) for this command too"
                )
            raise RayConnectError(f"could not connect to the Ray cluster at {address}: {exc}{hint}") from exc
        if interrupted():
            ray.shutdown()
            raise KeyboardInterrupt
        return True

    # -- Executor -----------------------------------------------------------------------------------

    def run(self, tasks: list[ShardTask], on_progress: ProgressCb, on_result: ResultCb) -> None:
        if not tasks:
            return
        connected_here = self._connect(tasks)
        try:
            self._run(tasks, on_progress, on_result)
        finally:
            if connected_here:
                with _ctrl_c_deferred() as interrupted:  # Ctrl-C half-way through would crash at exit too
                    self.ray.shutdown()
                if interrupted():
                    raise KeyboardInterrupt

    def _run(self, tasks: list[ShardTask], on_progress: ProgressCb, on_result: ResultCb) -> None:
        ray = self.ray
        board = self._start_board()
        remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=list(TRANSIENT_ERRORS))(_shard_task)
        pending: dict[Any, ShardTask] = {}
        finished: set[str] = set()
        try:

            def submit(task: ShardTask) -> None:
                ref = remote.options(name=f"convert {task.source.shard_id}").remote(task, board, __version__)
                pending[ref] = task

            for task in tasks:
                submit(task)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=WAIT_SECONDS)
                board = self._drain(board, finished, on_progress)
                for ref in done:
                    task = pending.pop(ref)
                    result = self._result(ref, task)
                    finished.add(result.shard_id)
                    for again in on_result(result) or ():
                        finished.discard(again.source.shard_id)  # its progress counts again
                        submit(again)
        except BaseException:  # Ctrl-C, or a callback failed: stop the cluster's work on this run
            self._cancel(list(pending))
            raise
        finally:
            if board is not None:
                try:
                    ray.kill(board)
                except Exception:
                    pass

    # -- helpers ------------------------------------------------------------------------------------

    def _start_board(self) -> Any:
        if not self.progress:
            return None
        try:
            return self.ray.remote(_ProgressBoard).options(num_cpus=0, max_restarts=0).remote()
        except Exception:
            return None  # progress is best effort: finished shards are still reported

    def _drain(self, board: Any, finished: set[str], on_progress: ProgressCb) -> Any:
        """Hand on the latest progress of shards not finished yet; drop the board if it stopped answering."""
        if board is None:
            return None
        try:
            latest = self.ray.get(board.drain.remote(), timeout=10)
        except Exception:
            return None
        for shard_id, (nbytes, samples) in latest.items():
            if shard_id not in finished:  # a late report must not move a finished shard backwards
                on_progress(shard_id, nbytes, samples)
        return board

    def _result(self, ref: Any, task: ShardTask) -> ShardResult:
        try:
            return self.ray.get(ref)
        except Exception as exc:  # retries used up: the worker or its node kept dying, or the task raised
            detail = (str(exc).strip().splitlines() or [""])[0]
            return ShardResult(
                shard_id=task.source.shard_id,
                ok=False,
                failure=f"Ray task failed (after up to {MAX_RETRIES} retries): {type(exc).__name__}: {detail}",
            )

    def _cancel(self, refs: list[Any]) -> None:
        """Cancel outstanding tasks (killing running workers) and wait a little for them to stop, so a
        run started right afterwards on the same OUT does not meet a shard still being written."""
        ray = self.ray
        if not refs:
            return
        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:
                pass
        try:
            ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_SECONDS)
        except BaseException:  # a second Ctrl-C or a lost connection: stop waiting
            pass


__all__ = ["RayExecutor", "RayConnectError", "check_address", "import_ray", "MAX_RETRIES"]
