"""Group tar members into samples: an image member and a JSON member sharing a key.

The key is the member name without its LAST extension (``a/000123.v2.jpg`` -> ``a/000123.v2``), and
extensions match case-insensitively. Members of one sample need not be adjacent: a member waits in
`Pairing` until its partner arrives. At most `max_pending` members wait; past that the oldest is
given up as unpaired, so memory stays bounded on a badly ordered tar, and it is reported, not lost
silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp"})
JSON_EXTENSION = "json"


def classify(name: str) -> tuple[str, str | None, str]:
    """(key, role, extension) where role is "image", "json" or None (member not part of a sample)."""
    slash = name.rfind("/")
    dot = name.rfind(".")
    if dot <= slash + 1:  # no extension, or a dot-file such as ".json"
        return name, None, ""
    ext = name[dot + 1 :]
    low = ext.lower()
    if low == JSON_EXTENSION:
        return name[:dot], "json", ext
    if low in IMAGE_EXTENSIONS:
        return name[:dot], "image", ext
    return name[:dot], None, ext


@dataclass(slots=True)
class Part:
    member: str
    payload: Any


@dataclass(slots=True)
class Entry:
    key: str
    image: Part | None = None
    json: Part | None = None

    @property
    def members(self) -> list[str]:
        return [p.member for p in (self.image, self.json) if p is not None]


@dataclass(slots=True)
class Duplicate:
    member: str
    reason: str
    payload: Any


class Pairing:
    """Pairs image and JSON members by key; reports duplicates and members that never pair."""

    def __init__(self, max_pending: int):
        self.max_pending = max_pending
        self.pending: dict[str, Entry] = {}
        self.completed: set[str] = set()

    def add(self, key: str, role: str, member: str, payload: Any) -> tuple[Entry | None, list[Entry | Duplicate]]:
        """Add a member. Returns (completed entry or None, problems to report now)."""
        if key in self.completed:
            return None, [Duplicate(member, f"a sample with key {key!r} was already converted from this shard", payload)]
        entry = self.pending.get(key)
        if entry is None:
            entry = Entry(key)
            self.pending[key] = entry
        elif getattr(entry, role) is not None:
            first = getattr(entry, role).member
            return None, [Duplicate(member, f"second {role} member for key {key!r} (first: {first!r})", payload)]
        setattr(entry, role, Part(member, payload))
        if entry.image is not None and entry.json is not None:
            del self.pending[key]
            self.completed.add(key)
            return entry, []
        problems: list[Entry | Duplicate] = []
        while len(self.pending) > self.max_pending:
            oldest = next(iter(self.pending))
            problems.append(self.pending.pop(oldest))
        return None, problems

    def leftovers(self) -> list[Entry]:
        rest = list(self.pending.values())
        self.pending.clear()
        return rest
