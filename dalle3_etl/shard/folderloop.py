"""The member loop of an extracted folder's unit (`convert_unit`): a sample's image and JSON file taken together.

The listing sorts a unit's files by (key, extension), so the files of a sample are adjacent and no key comes
back later. A key with exactly two files, one JSON and one image (by extension, any case), is the common case:
both are read as members (`FolderReader.member`, the same checks as for any member), and the sample goes to the
writer at once, without going through `Pairing`, `classify` and the per-member dispatch of
`ShardConverter._member`. Everything else (a key with one file or three, a text member named by the caption
settings, a member with a problem, an error reading one, a sample that would push a waiting one out of
`Pairing`) takes the generic path, `ShardConverter._member`, from the point where it stops being the common case:
so the rows, rejects and their order are exactly those of the member-by-member loop (tests/shard/
test_folderloop.py compares both on the same units).

Why the pairing can be skipped: it would add the first file (nothing to report as long as that pushes no
waiting entry out, checked here), then complete the sample with the second and hand it over with nothing to
report; its memory of converted keys only serves keys that come back, and in a unit none does.
"""

from __future__ import annotations

import time
from typing import Any

from dalle3_etl.shard.rows import Reject
from dalle3_etl.shard.samples import IMAGE_EXTENSIONS, Entry, Half, Pairing
from dalle3_etl.shard.tarheader import is_plain_name
from dalle3_etl.sources.folder import KIND_FILE

_IMAGE_EXTS = frozenset(ext.encode() for ext in IMAGE_EXTENSIONS)  # the listing's names are bytes
_PLAIN_KEY_MAX = 4096 - len(".jpeg")  # a longer key may make a name over tarheader's 4096 limit
_PROGRESS_EVERY = 0.25  # seconds between progress reports (as shard.convert's loop)


def convert_unit(conv: Any, reader: Any, pairing: Pairing) -> None:
    """Read the unit of `reader` (a `FolderReader`) through `conv` (its `ShardConverter`): see the module doc.
    Only when the settings name no text member (then a complete sample has more than two files)."""
    parts = reader.unit.names.split(b"\0")
    end = len(parts) - 2
    progress = conv.progress
    last = time.monotonic()
    i = 0
    while i < end:
        key = parts[i]
        j = i + 3
        while j < end and parts[j] == key:
            j += 3
        if progress is not None:
            now = time.monotonic()
            if now - last >= _PROGRESS_EVERY:
                progress(conv.shard_id, reader.position, conv.writer.samples)
                last = now
        json_first = _json_first(parts[i + 1], parts[i + 4]) if j - i == 6 else None
        if json_first is None:
            for k in range(i, j, 3):
                conv._member(reader, reader.member(_rel(key, parts[k + 1]), parts[k + 2]), pairing)
        else:
            _sample(conv, reader, pairing, key, (parts[i + 1], parts[i + 2], parts[i + 4], parts[i + 5]), json_first)
        i = j


def _rel(key: bytes, ext: bytes) -> bytes:
    return key + b"." + ext if ext else key


def _json_first(ext1: bytes, ext2: bytes) -> bool | None:
    """Whether the JSON file comes first, for a key whose two files are a JSON and an image; else None."""
    low1, low2 = ext1.lower(), ext2.lower()
    if low1 == b"json" and low2 in _IMAGE_EXTS:
        return True
    if low2 == b"json" and low1 in _IMAGE_EXTS:
        return False
    return None


def _next_member(conv: Any, reader: Any, rel: bytes, kind: bytes, plain: str | None, is_json: bool) -> tuple:
    """(the next member, the JSON file's bytes when they were read with it, else None)."""
    if is_json and plain is not None and kind == KIND_FILE:
        got = reader.read_whole(rel, plain, conv.settings.max_json_bytes)  # opened, read and closed at once
        if got is not None:
            return got
    return reader.member(rel, kind, plain), None


def _payload(conv: Any, reader: Any, member: Any, is_json: bool, json_payload: Any, data: Any) -> tuple[Any, int]:
    """(payload, weight) of a member just opened, as `ShardConverter._member` makes them."""
    if is_json:
        read = conv._json_payload(reader, member, data)
        reader.release()  # read whole: its descriptor is not kept
        return read
    name = member.name
    # the size is needed unless the JSON, read first, has one or is at fault (ShardConverter._member)
    need_size = json_payload is None or not (isinstance(json_payload, Reject) or json_payload.width is not None)
    return conv.writer.image_ref(reader, member, name[name.rfind(".") + 1 :].lower(), need_size), 0


def _plain_key(key: bytes) -> str | None:
    """`key` decoded when `key.<ext>` is a plain name for any extension of letters (`tarheader.is_plain_name`:
    its characters are those of the key, its length is at most 5 more), else None: the reader decides."""
    if len(key) > _PLAIN_KEY_MAX or not key.isascii():
        return None
    text = key.decode("ascii")
    return text if is_plain_name(text) else None


def _sample(conv: Any, reader: Any, pairing: Pairing, key: bytes, exts: tuple[bytes, ...], json_first: bool) -> None:
    """One key with a JSON and an image file (`exts`: the first's extension, kind, the second's extension, kind)."""
    text = _plain_key(key)
    plain1 = plain2 = None
    if text is not None:  # the extensions are ASCII letters (`_json_first`)
        plain1, plain2 = f"{text}.{exts[0].decode()}", f"{text}.{exts[2].decode()}"
    first, data1 = _next_member(conv, reader, _rel(key, exts[0]), exts[1], plain1, json_first)
    if first.problem is not None:
        conv._member(reader, first, pairing)
        conv._member(reader, reader.member(_rel(key, exts[2]), exts[3]), pairing)
        return
    try:
        payload1, weight1 = _payload(conv, reader, first, json_first, None, data1)
    except Exception as exc:
        conv._trouble(exc, first, pairing, None, None)
        conv._member(reader, reader.member(_rel(key, exts[2]), exts[3]), pairing)
        return
    name1 = first.name
    skey = name1[: name1.rfind(".")]
    role1 = "json" if json_first else "image"
    if _would_push_out(pairing, weight1):  # the member loop's order: the first file added, then the second opened
        _add(conv, pairing, first, skey, role1, payload1, weight1)
        conv._member(reader, reader.member(_rel(key, exts[2]), exts[3], plain2), pairing)
        return
    second, data2 = _next_member(conv, reader, _rel(key, exts[2]), exts[3], plain2, not json_first)
    if second.problem is not None:
        _add(conv, pairing, first, skey, role1, payload1, weight1)
        conv._member(reader, second, pairing)
        return
    try:
        payload2, _weight2 = _payload(conv, reader, second, not json_first, payload1 if json_first else None, data2)
    except Exception as exc:
        _add(conv, pairing, first, skey, role1, payload1, weight1)
        conv._trouble(exc, second, pairing, None, None)
        return
    half1, half2 = Half(name1, payload1), Half(second.name, payload2)
    entry = Entry(skey, json=half1, image=half2) if json_first else Entry(skey, image=half1, json=half2)
    try:
        conv.writer.finish(entry)
    except Exception as exc:
        conv._trouble(exc, second, pairing, entry, [])


def _would_push_out(pairing: Pairing, weight: int) -> bool:
    """Whether adding a member of `weight` bytes makes `Pairing` give up a waiting entry (`_give_up_oldest`)."""
    waiting = len(pairing.pending) + 1
    return waiting > pairing.max_pending or (pairing.pending_bytes + weight > pairing.max_pending_bytes and waiting > 1)


def _add(conv: Any, pairing: Pairing, member: Any, key: str, role: str, payload: Any, weight: int) -> None:
    """The first file handed to `Pairing` after all, as `ShardConverter._member` does (the second goes the same way)."""
    done = problems = None
    try:
        done, problems = pairing.add(key, role, member.name, payload, weight)
        conv._settle(done, problems)
    except Exception as exc:
        conv._trouble(exc, member, pairing, done, problems)
