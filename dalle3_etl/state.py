"""Run state under OUT/.dalle3-etl: manifest, per-shard completion records, lock, staging paths.

A shard is complete exactly when its record `shards/<id>.json` exists; the record is written last,
atomically, after the shard's part, rejects and files are in their final place. Anything a shard
without a record left behind is removed before it is redone.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

STATE_DIRNAME = ".dalle3-etl"
MANIFEST_VERSION = 1


class StateError(RuntimeError):
    """The output directory cannot be used as asked (locked, other settings, not ours)."""


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Layout:
    """Every path a run writes, all inside `out`."""

    out: Path

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def state(self) -> Path:
        return self.out / STATE_DIRNAME

    @property
    def manifest(self) -> Path:
        return self.state / "manifest.json"

    @property
    def lock(self) -> Path:
        return self.state / "lock"

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

    def ensure(self) -> None:
        for sub in ("shards", "parts", "rejects", "staging", "flat"):
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
    write_atomic(layout.record(shard_id), orjson.dumps(record, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def all_records(layout: Layout) -> dict[str, dict[str, Any]]:
    out = {}
    folder = layout.state / "shards"
    if folder.is_dir():
        for path in folder.glob("*.json"):
            rec = read_record(layout, path.stem)
            if rec is not None:
                out[path.stem] = rec
    return out


def clear_shard(layout: Layout, shard_id: str, *, flat: bool) -> None:
    """Forget a shard: record first (so a crash here leaves it incomplete), then everything it wrote."""
    layout.record(shard_id).unlink(missing_ok=True)
    remove_path(layout.staging(shard_id))
    layout.part(shard_id).unlink(missing_ok=True)
    layout.rejects(shard_id).unlink(missing_ok=True)
    remove_path(layout.flat_files(shard_id))
    if not flat:
        remove_path(layout.shard_data(shard_id))


# --- manifest -----------------------------------------------------------------------------------


def read_manifest(layout: Layout) -> dict[str, Any] | None:
    try:
        return orjson.loads(layout.manifest.read_bytes())
    except FileNotFoundError:
        return None


def write_manifest(layout: Layout, settings_fingerprint: dict[str, Any]) -> None:
    write_atomic(
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


class RunLock:
    """One run per output directory.

    The lock file holds `host pid`. Where `fcntl.flock` exists the kernel releases the lock when its
    holder dies, so a lock left by a killed run is taken over at once; the pid check covers the rest.
    """

    def __init__(self, path: Path):
        self.path = path
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

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
