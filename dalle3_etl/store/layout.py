"""Run state under OUT/.dalle3-etl: manifest, per-shard completion records, lock, staging paths.

A shard is complete exactly when its record `shards/<id>.json` exists; the record is written last,
atomically, after the shard's part, rejects and files are in their final place. Anything a shard
without a record left behind is removed before it is redone, through `fsio` and only what the tool
wrote: a shard's folder `OUT/data/<id>` is the tool's only once `owned/<id>` (or its record) says so,
and even then only the files its part lists are removed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import orjson

from dalle3_etl.errors import UsageError
from dalle3_etl.store.fsio import Root

STATE_DIRNAME = ".dalle3-etl"
MANIFEST_VERSION = 1


class StateError(UsageError, RuntimeError):
    """The output directory cannot be used as asked (locked, other settings, not ours)."""


def fsync_file(path: Path) -> None:
    """Flush a finished file's bytes to disk before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path: Path) -> None:
    """Flush everything written under `path`'s filesystem to disk (Linux `syncfs`, else `sync`).

    Called once per shard before its completion record is written, so that after a power cut a
    record never describes images or captions that did not reach the disk.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        syncfs = getattr(_libc(), "syncfs", None)
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(None, use_errno=True)
        except OSError:  # pragma: no cover - no C library to load
            _LIBC = False
    return _LIBC or None


TMP_GLOB = ".*.tmp*"  # every temporary name a run writes next to a final file
DATA_DIRNAME = "data"


@dataclass(frozen=True)
class Layout:
    """Every path a run writes, all inside `out`."""

    out: Path

    @cached_property
    def fs(self) -> Root:
        """Every delete, move and overwrite under OUT (OUT/data may be a symlink the user made)."""
        return Root(self.out, link_ok=(DATA_DIRNAME,))

    @property
    def data(self) -> Path:
        return self.out / DATA_DIRNAME

    @property
    def state(self) -> Path:
        return self.out / STATE_DIRNAME

    @property
    def manifest(self) -> Path:
        return self.state / "manifest.json"

    @property
    def lock(self) -> Path:
        return self.state / "lock"

    @property
    def workers_lock(self) -> Path:
        """Held (shared) by every worker process of a run; see `RunLock`."""
        return self.state / "workers.lock"

    @property
    def trash(self) -> Path:
        """Where `--restart` moves old output before deleting it (emptied by every run)."""
        return self.state / "trash"

    def record(self, shard_id: str) -> Path:
        return self.state / "shards" / f"{shard_id}.json"

    def part(self, shard_id: str) -> Path:
        return self.state / "parts" / f"{shard_id}.parquet"

    def rejects(self, shard_id: str) -> Path:
        return self.state / "rejects" / f"{shard_id}.jsonl"

    def staging(self, shard_id: str) -> Path:
        return self.state / "staging" / shard_id

    def flat_files(self, shard_id: str) -> Path:
        """Committed files of a --flat shard, waiting for the ordered publish at merge time."""
        return self.state / "flat" / shard_id

    def shard_data(self, shard_id: str) -> Path:
        return self.data / shard_id

    def claim(self, shard_id: str) -> Path:
        """Exists once the tool has created `OUT/data/<shard>` (written just before the folder is moved in)."""
        return self.state / "owned" / shard_id

    def owns_shard_data(self, shard_id: str) -> bool:
        """Whether `OUT/data/<shard>` is the tool's (a user folder that merely has a shard's name is not)."""
        return self.claim(shard_id).exists() or self.record(shard_id).exists()

    def ensure(self) -> None:
        for sub in ("shards", "parts", "rejects", "staging", "flat", "owned", "failed", "seen"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)


def read_record(layout: Layout, shard_id: str) -> dict[str, Any] | None:
    try:
        return orjson.loads(layout.record(shard_id).read_bytes())
    except FileNotFoundError:
        return None
    except orjson.JSONDecodeError:
        return None  # a torn record never happens with write_atomic; treat as incomplete anyway


def write_record(layout: Layout, shard_id: str, record: dict[str, Any]) -> None:
    layout.fs.write_atomic(layout.record(shard_id), orjson.dumps(record, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def all_records(layout: Layout) -> dict[str, dict[str, Any]]:
    out = {}
    folder = layout.state / "shards"
    if folder.is_dir():
        for path in folder.glob("*.json"):
            rec = read_record(layout, path.stem)
            if rec is not None:
                out[path.stem] = rec
    return out


# --- manifest -----------------------------------------------------------------------------------


def read_manifest(layout: Layout) -> dict[str, Any] | None:
    try:
        return orjson.loads(layout.manifest.read_bytes())
    except FileNotFoundError:
        return None


def write_manifest(layout: Layout, settings_fingerprint: dict[str, Any]) -> None:
    layout.fs.write_atomic(
        layout.manifest,
        orjson.dumps({"version": MANIFEST_VERSION, "settings": settings_fingerprint}, option=orjson.OPT_INDENT_2),
    )


def settings_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: was {old.get(k)!r}, now {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


# --- lock ---------------------------------------------------------------------------------------


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

    def __enter__(self) -> "RunLock":
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


# --- crash test hook -------------------------------------------------------------------------------
#
# The crash-safety tests stop a real run at a named point by setting, in the environment of
# `dalle3-etl convert`:
#
#     DALLE3_ETL_TEST_CRASH=[action@]point:arg[:arg...]      e.g. committed:data-000001
#
# action "kill" (the default) SIGKILLs the run's whole process group (driver, forkserver, workers),
# "killself" SIGKILLs only the process that reaches the point (a worker killed by the OOM killer),
# "stall" sleeps there for ever (a run that is still busy, holding its lock). Points:
#   sample:<shard>:<n>   a shard has written its n-th sample to staging      (shard.py)
#   staged:<shard>       a shard is fully staged, nothing committed           (shard.py)
#   commit:<shard>       its files are in OUT/data, part and rejects are not  (shard.py)
#   committed:<shard>    everything is in place but the record is not written (shard.py)
#   recorded:<shard>     its completion record is written                     (shard.py)
#   merge:rejects        rejects.jsonl is merged, dalle3.parquet is not       (merge.py)
#   merge:parquet        dalle3.parquet is fully written under its temporary name, not renamed (merge.py)
#   publish:<shard>:<n>  --flat: n-th file of a shard linked into OUT/data, its staged copy not yet removed
#   publish_part:<shard> --flat: the part without clashing rows is written, the record is not updated
#   restart:<shard>      --restart has removed every record, then this shard's files
# Unset (always, outside these tests) the hook costs one comparison.

_CRASH = os.environ.get("DALLE3_ETL_TEST_CRASH") or None


def crash_point(point: str, *args: object) -> None:
    if _CRASH is None:
        return
    action, _, where = _CRASH.rpartition("@")
    if where != ":".join((point, *map(str, args))):
        return
    if action == "stall":
        while True:
            time.sleep(3600)
    if action == "killself":
        os.kill(os.getpid(), signal.SIGKILL)
    else:
        os.killpg(os.getpgrp(), signal.SIGKILL)
