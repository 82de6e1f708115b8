"""The executors of this machine: `InlineExecutor` (this process, `--workers 1`) and `LocalExecutor` (a
process pool), with what a pool worker runs: its initialisation, the watch that kills it with the driver,
and its progress queue.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import os
import select
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from dalle3_etl.executors.base import (
    ProgressCb,
    ResultCb,
    ShardTask,
    mark_pool_worker,
    run_task,
)
from dalle3_etl.executors.pool import drain, mp_context
from dalle3_etl.shard.convert import ShardResult
from dalle3_etl.sources.hub.keep import discard_live_parts
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.locks import hold_workers_lock


class InlineExecutor:
    """Runs shards one after another in this process (`--workers 1`)."""

    def run(self, tasks: list[ShardTask], on_progress: ProgressCb, on_result: ResultCb) -> None:
        todo = collections.deque(tasks)
        while todo:
            todo.extend(on_result(run_task(todo.popleft(), on_progress)) or ())


_progress_queue = None


def _init_worker(progress_queue, driver_pid: int, workers_lock: str | None) -> None:
    global _progress_queue
    _progress_queue = progress_queue
    mark_pool_worker()  # its RSS log lines say "pool"
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver stops workers; no tracebacks from each
    # SIGTERM (the driver stopping the pool, or a broken pool stopping its other workers): die, as by default,
    # once the --keep-tars temporaries this worker is writing are removed (nothing else is undone: the next run
    # cleans up as after a kill)
    signal.signal(signal.SIGTERM, _stop_now)
    _die_with_driver(driver_pid)
    if workers_lock is not None:  # None: a dry run, which never writes into OUT
        hold_workers_lock(workers_lock)


def _stop_now(signum, frame) -> None:
    discard_live_parts()
    os._exit(128 + signal.SIGTERM)


def _die_with_driver(driver_pid: int) -> None:
    """Kill this worker as soon as the driver process is gone.

    Pool workers are children of the multiprocessing fork server, not of the driver: when the driver
    is killed (SIGKILL, OOM killer) they would otherwise finish and commit their shard, orphaned,
    while a new run may already be converting it.
    """

    def suicide() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    try:
        pidfd = os.pidfd_open(driver_pid)
    except ProcessLookupError:
        suicide()
    except (AttributeError, OSError):  # no pidfd (not Linux, old kernel): poll

        def watch() -> None:
            while True:
                time.sleep(0.2)
                try:
                    os.kill(driver_pid, 0)
                except ProcessLookupError:
                    suicide()
                except PermissionError:
                    pass
    else:

        def watch() -> None:
            select.select([pidfd], [], [])  # readable once the driver has exited
            suicide()

    threading.Thread(target=watch, name="dalle3-etl-driver-watch", daemon=True).start()


def _queue_progress(shard_id: str, nbytes: int, samples: int) -> None:
    try:
        _progress_queue.put_nowait((shard_id, nbytes, samples))
    except Exception:
        pass  # progress is best effort


def _pool_task(task: ShardTask) -> ShardResult:
    return run_task(task, _queue_progress)


MAX_POOL_RESTARTS = 8  # pools started again after a worker died, per run
STOP_GRACE_SECONDS = 2.0  # how long stopped workers get to remove their temporaries before they are killed


class LocalExecutor:
    """A process pool over shards. Ctrl-C kills the workers at once; their shards stay incomplete and
    are redone by the next run.

    A worker that dies (OOM killer, segfault) breaks the whole pool. The shards that were being
    converted then are reported failed (which one killed its worker cannot be told); shards that had
    not started yet (no staging folder) go on in a new pool.
    """

    def __init__(self, workers: int):
        self.workers = workers

    def run(self, tasks: list[ShardTask], on_progress: ProgressCb, on_result: ResultCb) -> None:
        restarts = 0
        while tasks:
            tasks = self._run_pool(tasks, on_progress, on_result, may_retry=restarts < MAX_POOL_RESTARTS)
            restarts += 1

    def _run_pool(
        self, tasks: list[ShardTask], on_progress: ProgressCb, on_result: ResultCb, may_retry: bool
    ) -> list[ShardTask]:
        """Run tasks in one pool. Returns the tasks to run in a new pool because a worker died first."""
        ctx = mp_context()
        progress_queue = ctx.Queue()
        pool = cf.ProcessPoolExecutor(
            max_workers=min(self.workers, len(tasks)),
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(progress_queue, os.getpid(), tasks[0].workers_lock),
        )
        retry: list[ShardTask] = []
        order = list(tasks)  # and the tasks `on_result` gave back
        try:
            pending = {pool.submit(_pool_task, task): task for task in tasks}
            while pending:
                done, _ = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
                drain(progress_queue, on_progress)
                for fut in done:
                    task = pending.pop(fut)
                    try:
                        result = fut.result()
                    except Exception as exc:  # the worker process died (OOM killer, segfault)
                        sid, part = task.source.shard_id, task.part
                        layout = Layout(Path(task.out))
                        started = layout.staging(sid) if part is None else layout.task_staging(sid, part.index)
                        if may_retry and isinstance(exc, BrokenProcessPool) and not started.exists():
                            retry.append(task)  # had not started
                            continue
                        result = ShardResult(
                            shard_id=sid,
                            part=None if part is None else part.index,
                            ok=False,
                            failure=(
                                f"worker process died while converting it or another shard (killed by a signal, "
                                f"e.g. the OOM killer?): {type(exc).__name__}: {exc}"
                            ),
                        )
                    for more in on_result(result) or ():
                        order.append(more)
                        pending[pool.submit(_pool_task, more)] = more
        except BaseException:
            _stop_workers(list((getattr(pool, "_processes", None) or {}).values()))
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        else:
            pool.shutdown(wait=True)
        finally:
            progress_queue.close()
        return sorted(retry, key=order.index)


def _stop_workers(procs: list) -> None:
    """Stop the pool's workers at once (Ctrl-C, an error in the driver): SIGTERM lets each remove its --keep-tars
    temporaries first (`_stop_now`); one still there after `STOP_GRACE_SECONDS` is killed."""
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()


__all__ = ["MAX_POOL_RESTARTS", "InlineExecutor", "LocalExecutor"]
