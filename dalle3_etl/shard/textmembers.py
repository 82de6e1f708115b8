"""Captions from a sample's text members (WebDataset / img2dataset ``<key>.txt``), next to its JSON fields.

A caption setting (`--caption-field`, `--caption-fallbacks`, `--extra-captions`) names a text member with a
leading dot: ``.txt``, ``.caption`` (``txt`` alone means ``.txt``; `settings.TEXT_MEMBER_RULE`). Such a
member is read whole when it is at most `max_json_bytes` (text members are small), a UTF-8 byte order mark
dropped, and kept in the waiting sample; a larger one is not read. When the sample is converted, `resolve`
walks the caption chain over the JSON fields' values and the text members' texts in the order the settings
name them: a missing, empty, not-UTF-8 or oversized text member is an unusable caption like an empty JSON
field, so the chain goes on, and the `no_caption` detail says what each name gave.

A sample without JSON (image + text member: many WebDatasets have no JSON) is converted when the caption
chain names a text member: its size comes from the image header, its `--fields` are empty.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from dalle3_etl.settings import Settings
from dalle3_etl.shard.rows import JsonInfo, Reject, _describe, all_captions, choose_caption
from dalle3_etl.shard.samples import Entry, Half, Pairing
from dalle3_etl.shard.tarstream import Member, TarReader

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class TextBad:
    """A text member that gives no caption: why (not UTF-8, too large)."""

    why: str


def pairing_for(settings: Settings) -> Pairing:
    """The shard's `Pairing`: text members are a sample's third role when the caption settings name some."""
    roles = frozenset("." + ext for ext in settings.text_exts)
    jsonless = any(name.startswith(".") for name in settings.caption_chain)
    return Pairing(settings.max_pending, text_roles=roles, jsonless=jsonless)


def read_text(reader: TarReader, member: Member, settings: Settings) -> tuple[str | TextBad, int]:
    """(text or why not, bytes held in memory) of the text member being read."""
    if member.size > settings.max_json_bytes:
        return TextBad(f"is {member.size} bytes, more than max_json_bytes={settings.max_json_bytes}; not read"), 0
    data = reader.read()
    if data[:3] == _BOM:
        data = data[3:]
    try:
        return data.decode("utf-8"), len(data)
    except UnicodeDecodeError as exc:
        hint = " (looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        return TextBad(f"is not valid UTF-8{hint}: byte 0x{data[exc.start]:02x} at offset {exc.start}"), len(data)


def _no_json_info(settings: Settings) -> JsonInfo:
    return JsonInfo(None, "", None, None, "no JSON member", None, {name: None for name in settings.fields})


def resolve(entry: Entry, settings: Settings) -> Entry:
    """The sample as `SampleWriter.finish` takes it: its JSON half holding the caption chosen along the chain
    over JSON fields and text members (a JSON-less sample gets an empty JSON half named after its text member).
    A member at fault (bad JSON, unsafe text member) is left as it is: the writer rejects the sample for it."""
    texts = entry.texts or {}
    bad = next((h for h in texts.values() if isinstance(h.payload, Reject)), None)
    if bad is not None:
        return Entry(entry.key, entry.image, bad)
    if entry.json is not None and type(entry.json.payload) is not JsonInfo:
        return entry
    info = entry.json.payload if entry.json is not None else _no_json_info(settings)
    values: dict[str, Any] = dict(info.kept or {})
    whys: dict[str, str] = {}
    for ext in settings.text_exts:
        role = "." + ext
        half = texts.get(role)
        value = None if half is None else half.payload
        if isinstance(value, TextBad):
            whys[role] = f"member {half.member!r} {value.why}"
            value = None
        elif half is None:
            whys[role] = f"no {role} member" + ("" if entry.json is not None else " and no JSON member")
        values[role] = value
    chain = settings.caption_chain
    caption, detail = choose_caption(values, chain)
    if caption is None:
        detail = "; ".join(f"{name}: {whys.get(name) or _describe(values.get(name))}" for name in chain)
    extra = settings.extra_captions
    captions = all_captions(values, extra, caption) if extra and caption is not None else None
    info = replace(info, caption=caption, caption_detail=detail, captions=captions, kept=None)
    member = entry.json.member if entry.json is not None else next(iter(texts.values())).member
    return Entry(entry.key, entry.image, Half(member, info))
