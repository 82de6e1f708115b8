"""What crash safety needs: bytes flushed to disk before a rename or a completion record, and the test hook
(`crash_point`) that stops a real run at a named point.

A shard's record must never reach the disk before the files it describes (`sync_filesystem`), and a file is
renamed into place only once its bytes are on disk (`fsync_file`). The crash-safety tests check both by
killing runs at the points `crash_point` names.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from pathlib import Path


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
#   sample:<shard>:<n>   a shard has written its n-th sample to staging      (shard/convert.py)
#   staged:<shard>       a shard is fully staged, nothing committed           (shard/convert.py)
#   commit:<shard>       its files are in OUT/data, part and rejects are not  (shard/convert.py)
#   committed:<shard>    everything is in place but the record is not written (shard/convert.py)
#   recorded:<shard>     its completion record is written                     (shard/convert.py)
#   dedup:<shard>        --dedup: a shard's rows merged, its duplicates' files moved, its reject lines written (run/dedup.py)
#   merge:rejects        rejects.jsonl is merged, dalle3.parquet is not       (run/merge.py; run/dedup.py with --dedup)
#   merge:parquet        dalle3.parquet is fully written under its temporary name, not renamed (run/merge.py)
#   publish:<shard>:<n>  --flat: n-th file of a shard linked into OUT/data, its staged copy not yet removed (run/merge.py)
#   publish_part:<shard> --flat: the part without clashing rows is written, the record is not updated (run/merge.py)
#   task:<shard>:<i>     task i of a split shard is staged and synced, not yet done     (shard/taskconvert.py)
#   assemble:<shard>     a split shard's tasks are put together in its staging folder    (run/tasks.py)
#   restart:<shard>      --restart has removed every record, then this shard's files (run/cleanup.py)
#   webshart:<shard>     --webshart: the shard's index is written, later shards' and the entry are not (run/webshart.py)
# Unset (always, outside these tests) the hook costs one comparison.

_CRASH = os.environ.get("DALLE3_ETL_TEST_CRASH") or None


def crash_point(point: str, *args: object) -> None:
    """Under DALLE3_ETL_TEST_CRASH naming this point (and these args): kill or stall here; else nothing."""
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
