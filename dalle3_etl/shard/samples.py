"""Group tar members into samples: an image member and a JSON member sharing a key.

The key is the member name without its LAST extension (``a/000123.v2.jpg`` -> ``a/000123.v2``), and
extensions match case-insensitively (``.PNG``, ``.JSON``). Members of one sample need not be adjacent:
a member waits in `Pairing` until its partner arrives. At most `max_pending` members, holding at most
`max_pending_bytes` of payload in memory, wait; past that the oldest is given up as unpaired, so memory
stays bounded on a badly ordered tar. Nothing is lost silently: a given-up member is reported, and so
is its partner when it turns up later ("given up earlier", not "missing").

Text members (WebDataset's ``<key>.txt``, img2dataset's caption): only the extensions the caption settings
name (`Settings.text_exts`) are members of a sample; with none named a ``.txt`` is an "other member" as
before. A sample is complete, and converted at once, when its image, its JSON and every named text member
are there. One that can be converted without the rest ("ready": image + JSON, or image + a text member when
the caption chain names one, `jsonless`) waits for the rest like any member, and is converted with what it
has when it is pushed out by the bounds above or the shard ends; the caption chain then goes on to its next
name. So the rows do not depend on member order as long as no more than `max_pending` samples wait at
once, and a member arriving after its sample was converted is a duplicate_member.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Image member extensions (lower case): what SimpleTuner opens through Pillow. `verify` uses the same set.
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"})
JSON_EXTENSION = "json"
#: Default bound on the payload bytes held in memory by waiting members (JSON text, image heads).
MAX_PENDING_BYTES = 256 << 20


def classify(name: str, text_exts: frozenset[str] = frozenset()) -> tuple[str, str | None, str]:
    """(key, role, extension) where role is "image", "json", "text" (an extension in `text_exts`, lower case)
    or None (member not part of a sample)."""
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
    if low in text_exts:
        return name[:dot], "text", ext
    return name[:dot], None, ext


@dataclass(slots=True)
class Half:
    """One half of a sample (its image or its JSON member): the member's name and what was read of it."""

    member: str
    payload: Any


@dataclass(slots=True)
class Entry:
    key: str
    image: Half | None = None
    json: Half | None = None
    weight: int = 0  # payload bytes held in memory while waiting
    why: str = ""  # for an entry handed back unpaired: why its partner is missing (a full sentence)
    texts: dict[str, Half] | None = None  # text members by role (".txt"), when the settings name some
    ready: bool = False  # handed back incomplete but convertible (see the module's doc): convert it

    @property
    def members(self) -> list[str]:
        halves = [p for p in (self.image, self.json) if p is not None]
        return [p.member for p in halves + list((self.texts or {}).values())]

    def half(self, role: str) -> Half | None:
        """The member in `role`: "image", "json" or a text role (".txt")."""
        if role[0] == ".":
            return None if self.texts is None else self.texts.get(role)
        return self.image if role == "image" else self.json

    def put(self, role: str, half: Half) -> None:
        if role[0] == ".":
            if self.texts is None:
                self.texts = {}
            self.texts[role] = half
        elif role == "image":
            self.image = half
        else:
            self.json = half


@dataclass(slots=True)
class Duplicate:
    member: str
    reason: str
    payload: Any


class Pairing:
    """Pairs image and JSON members by key; reports duplicates and members that never pair.

    Memory: the waiting members (bounded by `max_pending` and `max_pending_bytes`) plus one key per
    sample seen (to recognise duplicates and late partners of given-up members).
    """

    def __init__(
        self,
        max_pending: int,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        text_roles: frozenset[str] = frozenset(),
        jsonless: bool = False,
    ):
        self.text_roles = text_roles  # ".txt"...: the text members a complete sample has
        self.jsonless = jsonless  # image + text member, no JSON, is a sample (the caption chain names a text)
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.pending: dict[str, Entry] = {}
        self.pending_bytes = 0
        self.completed: set[str] = set()
        self.given_up: dict[str, tuple[str, str]] = {}  # key -> (member given up, bound hit), for its late partner
        self.evicted = 0

    def add(
        self, key: str, role: str, member: str, payload: Any, weight: int = 0
    ) -> tuple[Entry | None, list[Entry | Duplicate]]:
        """Add a member (`role`: "image", "json" or a text role such as ".txt"). Returns (completed entry or
        None, problems to report now).

        A problem is a `Duplicate` or an unpaired `Entry` (its `why` says why the partner is missing), or an
        incomplete entry to convert all the same (`ready`)."""
        if key in self.completed:
            return None, [
                Duplicate(
                    member,
                    f"another {role} member for key {key!r}: that sample was already converted "
                    f"or rejected earlier in this shard",
                    payload,
                )
            ]
        gone = self.given_up.get(key)
        if gone is not None:
            member_gone, bound = gone
            entry = Entry(
                key,
                why=f"its partner {member_gone!r} came earlier and was given up when more than "
                f"{bound} were waiting for a partner; the shard's samples are far apart "
                f"(raise max_pending)",
            )
            entry.put(role, Half(member, payload))
            self.completed.add(key)  # a third member for this key is a duplicate
            return None, [entry]
        entry = self.pending.get(key)
        if entry is None:
            entry = self.pending[key] = Entry(key)
        elif entry.half(role) is not None:
            first = entry.half(role).member
            return None, [Duplicate(member, f"second {role} member for key {key!r} (first: {first!r})", payload)]
        if role[0] == ".":
            entry.put(role, Half(member, payload))
        else:  # the hot path of every DALLE-3 member: no method call
            setattr(entry, role, Half(member, payload))
        entry.weight += weight
        self.pending_bytes += weight
        if (
            entry.image is not None
            and entry.json is not None
            and (not self.text_roles or (entry.texts is not None and len(entry.texts) == len(self.text_roles)))
        ):
            del self.pending[key]
            self.pending_bytes -= entry.weight
            self.completed.add(key)
            return entry, []
        return None, self._give_up_oldest()

    def _give_up_oldest(self) -> list[Entry | Duplicate]:
        """While more members (or bytes) wait than allowed, give up the oldest: reported as unpaired."""
        problems: list[Entry | Duplicate] = []
        while len(self.pending) > self.max_pending or (
            self.pending_bytes > self.max_pending_bytes and len(self.pending) > 1
        ):
            bound = (
                f"{self.max_pending} members"
                if len(self.pending) > self.max_pending
                else f"{self.max_pending_bytes} bytes of members"
            )
            oldest = self.pending.pop(next(iter(self.pending)))
            self.pending_bytes -= oldest.weight
            if self._ready(oldest):  # converted with what it has; a later member of it is a duplicate
                self.completed.add(oldest.key)
                problems.append(oldest)
                continue
            self.evicted += 1
            missing = "image" if oldest.image is None else "JSON"
            oldest.why = (
                f"no {missing} member with key {oldest.key!r} came in time: gave up waiting when more "
                f"than {bound} were waiting for a partner; the shard's samples are far apart "
                f"(raise max_pending)"
            )
            self.given_up[oldest.key] = (oldest.members[0], bound)
            problems.append(oldest)
        return problems

    def _ready(self, entry: Entry) -> bool:
        """Incomplete but convertible: marked `ready` (only when the settings name text members)."""
        if self.text_roles and entry.image is not None and (entry.json is not None or (self.jsonless and entry.texts)):
            entry.ready = True
        return entry.ready

    def leftovers(self) -> list[Entry]:
        """The entries still waiting, in arrival order: the convertible ones `ready`, the others unpaired."""
        rest = list(self.pending.values())
        for entry in rest:
            self._ready(entry)
        self.pending.clear()
        self.pending_bytes = 0
        return rest
