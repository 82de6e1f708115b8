"""One run per output directory: the run lock, the workers lock its worker processes hold, who holds it.

A new run takes `lock` (`RunLock`), then waits until no worker process of an earlier, killed run still
holds `workers.lock`, so such a worker can never commit a shard under the new run's feet. `lock_holder`
tells `status` and `verify` whether a run is working on OUT now.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dalle3_etl.store.layout import Layout, StateError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


WORKERS_WAIT = 30.0  # seconds a new run waits for worker processes of a killed run to exit


class RunLock:
    """One run per output directory.

    The lock file holds `host pid`. Where `fcntl.flock` exists the kernel releases the lock when its
    holder dies, so a lock left by a killed run is taken over at once; the pid check covers the rest.

    Worker processes of a run hold `workers.lock` shared (`hold_workers_lock`) and exit when their
    driver dies. A new run, once it has the lock, waits until no worker of an earlier run holds
    `workers.lock`, so a killed run's worker can never commit a shard under a new run's feet.
    """

    def __init__(self, path: Path, workers_lock: Path | None = None):
        self.path = path
        self.workers_lock = workers_lock
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                os.close(fd)
                raise StateError(
                    f"another dalle3-etl run is using {self.path.parent.parent} (lock held by {holder or 'unknown'}); "
                    "wait for it to finish or stop it first"
                ) from None
        else:  # pragma: no cover
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            if len(holder) == 2 and holder[0] == socket.gethostname() and _pid_alive(int(holder[1])):
                os.close(fd)
                raise StateError(f"another dalle3-etl run (pid {holder[1]}) is using {self.path.parent.parent}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} {os.getpid()}\n".encode(), 0)
        self._fd = fd
        if self.workers_lock is not None:
            try:
                _wait_for_old_workers(self.workers_lock)
            except BaseException:
                self.release()
                raise

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _wait_for_old_workers(path: Path, timeout: float = WORKERS_WAIT) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return  # closing fd below releases it at once
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if time.monotonic() >= deadline:
                raise StateError(
                    f"worker processes of an earlier, killed dalle3-etl run still write to {path.parent.parent} "
                    f"(they hold {path}); stop them (`fuser {path}` lists them) and run again"
                )
            time.sleep(0.05)
    finally:
        os.close(fd)


_workers_lock_fd: int | None = None


def _lock_shared(path: str | os.PathLike) -> int | None:
    """An fd holding `workers.lock` shared, or None where there is no flock (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    return fd


def hold_workers_lock(path: str | os.PathLike) -> None:
    """In a worker process: hold `workers.lock` shared until the process exits."""
    global _workers_lock_fd
    if _workers_lock_fd is not None:
        os.close(_workers_lock_fd)
        _workers_lock_fd = None
    _workers_lock_fd = _lock_shared(path)


@contextmanager
def workers_lock_held(path: str | os.PathLike) -> Iterator[None]:
    """Hold `workers.lock` shared while the body runs (a Ray task: its worker process outlives the task,
    so the lock cannot be held until the process exits as a pool worker does). A new run waits for it,
    as for a pool worker of a killed run. Where the filesystem has no locks, the body runs anyway."""
    try:
        fd = _lock_shared(path)
    except OSError:  # a shared filesystem without flock
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def lock_holder(layout: Layout) -> str | None:
    """`host pid` of the run holding OUT's lock, or None when no run holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    try:
        fd = os.open(layout.lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            return os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
        return None
    finally:
        os.close(fd)
