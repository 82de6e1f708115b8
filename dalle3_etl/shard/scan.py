"""Header-only scan of a plain tar shard: the offsets where it may be cut into tasks without changing the output.

The scan walks the headers with `tarstream.TarReader` (bodies are seeked over, never read) and replays what the
conversion keeps across members, so a task that starts at a point starts in the state the whole-shard
conversion has there:

- the pairing (`textmembers.pairing_for`: the conversion's `samples.Pairing`, same bounds and roles, text members
  included when the caption settings name them; JSON and text members weigh their size): a point is placed only
  where no member is waiting for the rest of its sample, so a sample is never cut, whatever the member order;
- names: the first component of a member's name without its extension (`name_token`: the start of every path
  its sample writes, `<key>.<ext>`, `<key>.txt` or a folder), compared case-insensitively and after Unicode
  normalisation, must not appear on both sides of a point; so a duplicate member, the late partner of a given-up member and a name clash (also macOS's
  case-insensitive one) are decided inside one task, exactly as in the whole shard;
- a pax global header applies to every later member: no point after the first one;
- a point is the offset of the FIRST header block of a member (before its GNU long-name or pax headers).

Only a plain (uncompressed) seekable tar is split; damage stops the scan with no point at all (the shard is then
converted whole, its damage reported as always).
"""

from __future__ import annotations

import bisect
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from dalle3_etl.settings import Settings
from dalle3_etl.shard.samples import classify
from dalle3_etl.shard.tarcompress import open_tar
from dalle3_etl.shard.tarstream import TarFormatError
from dalle3_etl.shard.textmembers import pairing_for


@dataclass(frozen=True)
class ShardScan:
    """Where a shard may be cut: `points` are member first-header offsets, increasing, after the first member."""

    size: int
    members: int
    points: tuple[int, ...]
    why_none: str = ""  # why there is no point at all ("" when the walk went through)


def name_token(name: str) -> str:
    """What a sample member may clash on: the first component of its name without its last extension, ignoring case
    and Unicode normalisation. Every path its sample writes (`<key>.<ext>`, `<key>.txt`, or below a folder) starts
    with a component whose stem this is, so two members that share a key, a file or a folder share the token."""
    slash = name.find("/")
    first = name if slash < 0 else name[:slash]
    dot = first.rfind(".")
    if dot > 0:
        first = first[:dot]
    if first.isascii():
        return first.lower()
    return unicodedata.normalize("NFC", first).casefold()


def key_token(key: str) -> str:
    """`name_token` of every member whose key (its name without the last extension, `samples.classify`) is `key`:
    a sample's members share it, so a task collects keys (half as many) and turns them into tokens once."""
    if "/" not in key and key.isascii():
        return key.lower()
    return name_token(key + ".")


def key_tokens(keys: Iterable[str]) -> list[str]:
    """`key_token` of each key, its plain case (ASCII, no folder: nearly every key) inlined: a task's 12,500
    keys in ~2 ms instead of ~10. Not deduplicated (the driver reads them into a set)."""
    return [k.lower() if "/" not in k and k.isascii() else key_token(k) for k in keys]


class PairingWalk:
    """The state the scan replays: the pairing, the span of each name token, the candidate points."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.text_exts = settings.text_exts
        self.pairing = pairing_for(settings)  # the conversion's: text members as a third role when named
        self.first_seen: dict[str, int] = {}  # token -> index of the first member holding it
        self.last_seen: dict[str, int] = {}  # token -> index of the last one
        self.candidates: list[tuple[int, int]] = []  # (member index, offset) where nothing was pending

    def member(self, index: int, member) -> None:
        if member.kind == "dir" and member.problem is None:
            return
        name = member.name
        key, role, ext = classify(name, self.text_exts)
        if role is None:
            return
        token = name_token(name)
        if token not in self.first_seen:
            self.first_seen[token] = index
        self.last_seen[token] = index
        weight = 0
        if role != "image" and member.problem is None and member.size <= self.settings.max_json_bytes:
            weight = member.size  # a JSON or text member is read and held while its sample waits
        if role == "text":
            role = "." + ext.lower()
        self.pairing.add(key, role, name, None, weight)

    def points(self) -> tuple[int, ...]:
        """The candidates no token spans: every token's members lie on one side of the point."""
        reach_from: dict[int, int] = {}  # index of a token's first member -> furthest last member of such tokens
        for token, first in self.first_seen.items():
            last = self.last_seen[token]
            if last > first:
                reach_from[first] = max(reach_from.get(first, first), last)
        firsts = sorted(reach_from)
        out = []
        reach = -1  # the furthest member of a token first seen before the candidate
        j = 0
        for index, offset in self.candidates:  # increasing index
            while j < len(firsts) and firsts[j] < index:
                reach = max(reach, reach_from[firsts[j]])
                j += 1
            if reach < index:
                out.append(offset)
        return tuple(out)


def scan_tar(fh: BinaryIO, size: int, settings: Settings) -> ShardScan:
    """Scan an open shard (`size` bytes); see the module doc."""
    reader = open_tar(fh)
    if not reader.seekable:
        reader.close()
        return ShardScan(size, 0, (), "compressed or not seekable")
    walk = PairingWalk(settings)
    pending = walk.pairing.pending
    members = iter(reader)
    index = 0
    try:
        while True:
            at = reader.next_header
            free = index > 0 and not pending and not reader.saw_global_header
            member = next(members, None)
            if member is None:
                break
            if free:
                walk.candidates.append((index, at))
            walk.member(index, member)
            index += 1
    except TarFormatError as exc:
        return ShardScan(size, index, (), f"damaged: {exc}")
    return ShardScan(size, index, walk.points())


def choose_points(scan: ShardScan, task_bytes: int) -> tuple[int, ...]:
    """Split points for tasks of about `task_bytes`: none when the shard is under 1.5x that; else the candidate
    nearest each of the evenly spaced targets (a shard with no candidate stays whole)."""
    size = scan.size
    if not scan.points or size < task_bytes * 3 // 2:
        return ()
    count = max(1, round(size / task_bytes))
    chosen: list[int] = []
    points = scan.points
    for k in range(1, count):
        target = size * k // count
        i = bisect.bisect_left(points, target)
        best = min(points[max(0, i - 1) : i + 1], key=lambda p: (abs(p - target), p))
        if not chosen or best > chosen[-1]:
            chosen.append(best)
    return tuple(chosen)


__all__ = ["PairingWalk", "ShardScan", "choose_points", "key_token", "key_tokens", "name_token", "scan_tar"]
