"""Split points of a local plain tar found in milliseconds: a look at a few blocks near each target offset, no scan.

`scan.scan_tar` walks every header of a shard before its tasks can start: ~7 µs of Python a member, 1.4 s for a
shard of 100,000 samples, during which no task runs. The probe instead looks, from each evenly spaced target
offset, for the first 512-byte block that is a plausible tar header (ustar magic, valid checksum), walks on from
there with `TarReader` (every header checked; a block that only looked like one fails there and the search goes
on) to the first member whose name token
(`scan.name_token`) differs from the one before it (the start of the next sample in a tar that keeps a sample's
members together, as every writer does) and proposes that member's first header as a point. That is a guess: it could sit
inside a member's data, or cut a sample, a GNU long-name record from its header, a name from its duplicate.
So every task checks its own end when it is done (`taskconvert`: the header walk from its start landed exactly
on its end, nothing was waiting for a partner there, no pax global header before it, its reading was not stopped
by damage) and reports the name tokens it met; the driver checks that no token lies in two tasks of the shard
(`run.tasks`). A shard whose guess fails any check is converted again whole, so the output never depends on it.

Before guessing, the first members are walked as the scan walks them (`scan.PairingWalk`): if no point is free in that
head (an unordered tar, all JSONs first), guessing would fail, and the full scan decides instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

from dalle3_etl.settings import Settings
from dalle3_etl.shard.scan import PairingWalk, name_token
from dalle3_etl.shard.tarcompress import open_tar
from dalle3_etl.shard.tarheader import BLOCK, TarFormatError, checksum_ok
from dalle3_etl.shard.tarstream import TarReader

HEAD_MEMBERS = 2000  # members walked at the start of a shard to see that it has free points at all
WINDOW = 64 << 20  # bytes searched after each target for a candidate
CHUNK = 1 << 20  # bytes read at a time while searching
LOOKAHEAD = 64  # members walked from a candidate to find where a sample starts


def _pread(fh: BinaryIO, offset: int, n: int) -> bytes:
    try:
        return os.pread(fh.fileno(), n, offset)
    except (AttributeError, OSError, ValueError):  # no file descriptor (a wrapped stream)
        fh.seek(offset)
        return fh.read(n)


def _candidates(fh: BinaryIO, target: int, limit: int) -> Iterator[int]:
    """Block boundaries in [target, limit) holding ustar magic and a valid header checksum, in order."""
    base = (target + BLOCK - 1) // BLOCK * BLOCK
    while base < limit:
        chunk = _pread(fh, base, min(CHUNK, limit - base) + BLOCK)
        if not chunk:
            return
        i = chunk.find(b"ustar", 257)
        while i >= 0:
            start = i - 257
            if start % BLOCK == 0 and base + start < limit and checksum_ok(chunk[start : start + BLOCK]):
                yield base + start
            i = chunk.find(b"ustar", i + 1)
        base += CHUNK


def _sample_start(fh: BinaryIO, at: int, limit: int) -> int | None:
    """From a header at `at`: the first header (before its GNU/pax records) of the first member whose name token
    is not that of the member before it, before `limit`; None when the walk (`TarReader`'s, every header
    checked) meets damage or goes too far."""
    fh.seek(at)
    reader = TarReader(fh, seekable=True, stop_at=limit)
    before = None
    try:
        for _ in range(LOOKAHEAD):
            start = reader.next_header
            member = next(iter(reader), None)
            if member is None:
                return None
            token = name_token(member.name)
            if before is not None and token != before:
                return start
            before = token
    except TarFormatError:
        return None
    return None


def _point_after(fh: BinaryIO, target: int, limit: int) -> int | None:
    """The first sample start found from a plausible header in [target, limit)."""
    for at in _candidates(fh, target, limit):
        point = _sample_start(fh, at, limit)
        if point is not None:
            return point
    return None


def _head_is_free(fh: BinaryIO, settings: Settings) -> bool:
    """Whether the first HEAD_MEMBERS members of the shard have a point where nothing waits (the scan's rule)."""
    fh.seek(0)
    with open_tar(fh) as reader:  # closes what it made for a compressed shard, never `fh`
        if not reader.seekable:
            return False
        walk = PairingWalk(settings)
        pending = walk.pairing.pending
        try:
            for index, member in enumerate(reader):
                if index >= HEAD_MEMBERS:
                    break
                if index > 0 and not pending and not reader.saw_global_header:
                    return True
                walk.member(index, member)
        except TarFormatError:
            return False
    return False


def probe_points(fh: BinaryIO, size: int, settings: Settings) -> tuple[int, ...] | None:
    """Guessed split points of an open shard of `size` bytes for tasks of about `settings.task_bytes`: () when it
    stays whole (under 1.5x that), None when guessing is not worth it (the head has no free point, or no
    candidate was found: the full scan decides)."""
    task_bytes = settings.task_bytes
    if size < task_bytes * 3 // 2:
        return ()
    if not _head_is_free(fh, settings):
        return None
    count = max(1, round(size / task_bytes))
    points: list[int] = []
    for k in range(1, count):
        target = size * k // count
        if points and target <= points[-1]:
            continue
        limit = min(size, target + WINDOW, size * (k + 1) // count)
        found = _point_after(fh, target, limit)
        if found is not None and found > (points[-1] if points else 0):
            points.append(found)
    return tuple(points) or None


__all__ = ["probe_points"]
