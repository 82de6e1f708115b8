"""From a sample's JSON to the row SimpleTuner gets: caption choice, size, reject reasons.

`parse_json` runs once per JSON member and keeps only what the row needs. A caption is cleaned once
(`clean_caption`) and the same text goes to the parquet and to the `.txt` file: newlines and runs of
whitespace become one space, so SimpleTuner never splits one caption into several; control characters
are removed, and a caption left with nothing but invisible format characters (zero-width space, BOM...)
counts as empty, so the caption chain goes on to the next field.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from dalle3_etl.settings import LIST_FIELDS, Settings


class Reason(StrEnum):
    """Reject reason codes, as written to rejects.jsonl and counted in the summary: the one spelling of each.

    A member is a `str` equal to its code, and orjson writes it as its code; as a dict KEY orjson refuses a
    str subclass, so counts are keyed by `str(reason)` (the plain code)."""

    UNSAFE_MEMBER = "unsafe_member"
    DUPLICATE_MEMBER = "duplicate_member"
    JSON_TOO_LARGE = "json_too_large"
    JSON_INVALID = "json_invalid"
    JSON_NOT_OBJECT = "json_not_object"
    NO_CAPTION = "no_caption"
    SIZE_UNREADABLE = "size_unreadable"
    SIZE_INVALID = "size_invalid"
    IMAGE_INVALID = "image_invalid"
    IMAGE_WITHOUT_JSON = "image_without_json"
    JSON_WITHOUT_IMAGE = "json_without_image"
    TEXT_WITHOUT_IMAGE = "text_without_image"
    NAME_CLASH = "name_clash"
    NAME_UNUSABLE = "name_unusable"
    SHARD_UNREADABLE = "shard_unreadable"
    SAMPLE_ERROR = "sample_error"
    FILTERED = "filtered"
    DUPLICATE = "duplicate"
    MEMBER_UNREADABLE = "member_unreadable"


#: Every reason code with what it means (README table, `--help` texts, tests).
REASONS: dict[Reason, str] = {
    Reason.UNSAFE_MEMBER: "member name or type is unsafe: absolute, '..', backslash, control character, "
    "not UTF-8, over 4096 bytes; symlink, hardlink, device, fifo, sparse",
    Reason.DUPLICATE_MEMBER: "another member for a key that already has one (the first one is kept)",
    Reason.JSON_TOO_LARGE: "JSON member larger than max_json_bytes (skipped unread)",
    Reason.JSON_INVALID: "JSON member is not valid JSON or not UTF-8",
    Reason.JSON_NOT_OBJECT: "JSON member is valid JSON but not an object",
    Reason.NO_CAPTION: "no usable caption along the caption chain (missing, wrong type, empty, blank, or only "
    "control or invisible format characters)",
    Reason.SIZE_UNREADABLE: "JSON width/height missing or invalid and the image header cannot be read (within the "
    "image's first 16 MiB)",
    Reason.SIZE_INVALID: "JSON width/height missing or invalid and the image header gives a size above max_dimension",
    Reason.IMAGE_INVALID: "image member is empty (0 bytes), or its first bytes are not the signature of the image "
    "type its extension names (JPEG, PNG, WebP, GIF, BMP, TIFF); the detail says what they look like",
    Reason.IMAGE_WITHOUT_JSON: "image member whose JSON member never came (or was given up, see detail)",
    Reason.JSON_WITHOUT_IMAGE: "JSON member whose image member never came (or was given up, see detail)",
    Reason.TEXT_WITHOUT_IMAGE: "text member named by the caption settings (--caption-field txt...) whose image "
    "member never came",
    Reason.NAME_CLASH: "the output file name is taken: by a folder another member needs, by a name differing "
    "only in case or Unicode normalization on a case-insensitive file system, or (--flat) by an "
    "earlier shard",
    Reason.NAME_UNUSABLE: "the output file cannot be created under that name (too long for the output path, or "
    "more than 256 folders deep)",
    Reason.SHARD_UNREADABLE: "the tar is damaged from here on (truncated, bad header, not a tar, bad "
    "compression); samples before the damage are kept",
    Reason.SAMPLE_ERROR: "an unexpected error while handling this sample (the detail names the exception and where "
    "it was raised); the rest of the shard is converted. A bug: please report it",
    Reason.FILTERED: "left out by a filter (--min-side, --max-aspect, --sources, --exclude-sources, "
    "--min-caption-chars); the detail names the filter and the value ('min_side: 816 < 1024')",
    Reason.DUPLICATE: "--dedup FIELD: an earlier sample (shard order, then member order) has the same value of "
    "FIELD; the detail names the sample kept",
    Reason.MEMBER_UNREADABLE: "extracted folder: a file that cannot be read (no permission, removed after the "
    "listing, replaced by a link or folder); its partner is rejected with it",
}


@dataclass(frozen=True, slots=True)
class Reject:
    reason: Reason
    detail: str


@dataclass(slots=True)
class JsonInfo:
    caption: str | None
    caption_detail: str
    width: int | None
    height: int | None
    size_detail: str  # why width/height cannot be used ("" when they can)
    source: str | None
    extras: dict[str, Any]
    size_invalid: bool = False  # the JSON has width/height, but a value is not a usable size
    image_ext: str | None = None  # extension of the JSON's `image_name`, lower case, when it has one
    captions: list[str] | None = None  # with --extra-captions: every caption, the first one first
    dedup_key: bytes | None = None  # --dedup: 16-byte digest of the field's value (None: the field is missing)
    kept: dict[str, Any] | None = None  # with text members named: the caption fields' values (`textmembers`)


# Control characters that are not whitespace (tab, newline, \x1c-\x1f and NEL are whitespace: they become a space).
_CONTROLS = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")
_ASCII_CONTROLS = bytes([*range(0x00, 0x09), *range(0x0E, 0x1C), 0x7F])


def clean_caption(text: str) -> str:
    """Whitespace runs (newlines included) -> one space, ends trimmed; control characters removed; "" when
    only format characters (Unicode Cf: zero-width space/joiners, word joiner, BOM...) would be left."""
    cleaned = " ".join(text.split())
    if cleaned.isascii():  # O(1); then a check in C at ~1 ns a byte (str.isprintable costs twice that)
        if len(cleaned.encode().translate(None, _ASCII_CONTROLS)) == len(cleaned):
            return cleaned
    elif cleaned.isprintable():  # no control or format character
        return cleaned
    cleaned = " ".join(_CONTROLS.sub("", cleaned).split())
    for char in cleaned:
        if char != " " and unicodedata.category(char) != "Cf":
            return cleaned
    return ""


def _caption_from(value: Any) -> str | None:
    if isinstance(value, str):
        return clean_caption(value) or None
    if isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                cleaned = clean_caption(item)
                if cleaned:
                    return cleaned
    return None


def _describe(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, str):
        return "empty" if not value.strip() else "empty (only control or invisible format characters)"
    if isinstance(value, list):
        return "list without a non-empty string"
    return f"wrong type ({type(value).__name__})"


def choose_caption(obj: dict[str, Any], chain: tuple[str, ...]) -> tuple[str | None, str]:
    """First usable caption along the chain, or (None, why each field failed)."""
    for name in chain:
        caption = _caption_from(obj.get(name))
        if caption is not None:
            return caption, name
    return None, "; ".join(f"{name}: {_describe(obj.get(name))}" for name in chain)


def all_captions(obj: dict[str, Any], extra: tuple[str, ...], first: str) -> list[str]:
    """`first`, then the captions of the `extra` fields in order (a list field gives each of its strings),
    cleaned like the first; empty ones and repeats (after cleaning) dropped."""
    out = [first]
    for name in extra:
        value = obj.get(name)
        for item in (value,) if isinstance(value, str) else value if isinstance(value, list) else ():
            if isinstance(item, str):
                text = clean_caption(item)
                if text and text not in out:  # a handful of captions: a list is as fast as a set
                    out.append(text)
    return out


_DIGITS = re.compile(r"[0-9]{1,12}")


def _dimension(value: Any, limit: int) -> tuple[int | None, str]:
    """(value, "") for a usable size, else (None, why not)."""
    if type(value) is int and 0 < value <= limit:
        return value, ""  # the common case (bool is not `int` by `type`)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None, f"{_short(value)} is not a number"
    if isinstance(value, str):
        text = value.strip()
        if _DIGITS.fullmatch(text) is None:
            return None, f"{_short(value)} is not a whole number"
        value = int(text)
    elif isinstance(value, float):
        if not value.is_integer():
            return None, f"{_short(value)} is not a whole number"
        value = int(value)
    if value <= 0:
        return None, f"{value} is not positive"
    if value > limit:
        return None, f"{value} is above {limit}"
    return value, ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def json_size(
    obj: dict[str, Any], limit: int, names: tuple[str, ...] = ("width", "height")
) -> tuple[int | None, int | None, str]:
    """(width, height, detail): both valid, or (None, None, why not) to fall back to the image header.
    `names`: the JSON fields holding them (`--size-fields`)."""
    raw_w, raw_h = obj.get(names[0]), obj.get(names[1])
    if raw_w is None and raw_h is None:
        return None, None, f"JSON has no {names[0]}/{names[1]}"
    width, why_w = _dimension(raw_w, limit) if raw_w is not None else (None, "missing")
    height, why_h = _dimension(raw_h, limit) if raw_h is not None else (None, "missing")
    if width is not None and height is not None:
        return width, height, ""
    problems = [f"{name} {why}" for name, why in zip(names, (why_w, why_h), strict=True) if why]
    return None, None, f"JSON {', '.join(problems)}"


def _image_ext(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    base = value.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    if dot <= 0:
        return None
    return base[dot + 1 :].lower() or None


def _extra_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in LIST_FIELDS:
        if isinstance(value, list):
            return [v if isinstance(v, str) or v is None else orjson.dumps(v).decode() for v in value]  # null stays
        return [value if isinstance(value, str) else orjson.dumps(value).decode()]
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _not_utf8(data: bytes) -> str | None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        hint = " (looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        return f"JSON is not valid UTF-8{hint}: byte 0x{data[exc.start]:02x} at offset {exc.start}"
    return None


def parse_json(data: bytes, settings: Settings) -> JsonInfo | Reject:
    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]  # a UTF-8 byte order mark: allowed to be ignored (RFC 8259), written by some tools
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        why = _not_utf8(data)
        if why is not None:
            return Reject(Reason.JSON_INVALID, why)
        return Reject(Reason.JSON_INVALID, f"invalid JSON: {exc}")
    if not isinstance(obj, dict):
        return Reject(Reason.JSON_NOT_OBJECT, f"JSON is a {type(obj).__name__}, not an object")
    caption, caption_detail = choose_caption(obj, settings.caption_chain)
    size_fields = settings.size_fields
    width, height, size_detail = json_size(obj, settings.max_dimension, size_fields)
    size_invalid = width is None and (obj.get(size_fields[0]) is not None or obj.get(size_fields[1]) is not None)
    source = obj.get("source")
    if source is not None and not isinstance(source, str):
        source = orjson.dumps(source).decode()
    extras = {name: _extra_value(name, obj.get(name)) for name in settings.fields}
    captions = all_captions(obj, settings.extra_captions, caption) if settings.extra_captions and caption else None
    return JsonInfo(
        caption,
        caption_detail,
        width,
        height,
        size_detail,
        source,
        extras,
        size_invalid,
        _image_ext(obj.get("image_name")),
        captions,
        dedup_key(obj.get(settings.dedup)) if settings.dedup else None,
        {n: obj.get(n) for n in (*settings.caption_chain, *settings.extra_captions)} if settings.text_exts else None,
    )


def dedup_key(value: Any) -> bytes | None:
    """The key `--dedup` compares: blake2b-128 of the field's string value (another JSON value: its JSON text).
    None for a missing, null or blank value: that sample is kept (a blank is not a hash)."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        data = value.encode("utf-8", "surrogatepass")
    else:
        data = orjson.dumps(value)
    return hashlib.blake2b(data, digest_size=16).digest()
