"""From a sample's JSON to the row SimpleTuner gets: caption choice, size, reject reasons.

`parse_json` runs once per JSON member and keeps only what the row needs. A caption is cleaned once
(`clean_caption`) and the same text goes to the parquet and to the `.txt` file: newlines and runs of
whitespace become one space, so SimpleTuner never splits one caption into several.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from dalle3_etl.settings import LIST_FIELDS, Settings


class Reason:
    """Reject reason codes, as written to rejects.jsonl and counted in the summary."""

    UNSAFE_MEMBER = "unsafe_member"
    DUPLICATE_MEMBER = "duplicate_member"
    JSON_TOO_LARGE = "json_too_large"
    JSON_INVALID = "json_invalid"
    JSON_NOT_OBJECT = "json_not_object"
    NO_CAPTION = "no_caption"
    SIZE_UNREADABLE = "size_unreadable"
    SIZE_INVALID = "size_invalid"
    IMAGE_WITHOUT_JSON = "image_without_json"
    JSON_WITHOUT_IMAGE = "json_without_image"
    NAME_CLASH = "name_clash"


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str
    detail: str


@dataclass(slots=True)
class JsonInfo:
    caption: str | None
    caption_detail: str
    width: int | None
    height: int | None
    size_detail: str
    source: str | None
    extras: dict[str, Any]


def clean_caption(text: str) -> str:
    return " ".join(text.split())


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
        return "empty" if not value.strip() else "unusable"
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


def _dimension(value: Any, limit: int) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and 0 < value <= limit:
        return value
    return None


def json_size(obj: dict[str, Any], limit: int) -> tuple[int | None, int | None, str]:
    """(width, height, detail): both valid, or (None, None, why not) to fall back to the image header."""
    raw_w, raw_h = obj.get("width"), obj.get("height")
    width, height = _dimension(raw_w, limit), _dimension(raw_h, limit)
    if width is not None and height is not None:
        return width, height, ""
    if raw_w is None and raw_h is None:
        return None, None, "JSON has no width/height"
    return None, None, f"JSON width/height not usable (width={raw_w!r}, height={raw_h!r})"


def _extra_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in LIST_FIELDS:
        if isinstance(value, list):
            return [v if isinstance(v, str) else orjson.dumps(v).decode() for v in value]
        return [value if isinstance(value, str) else orjson.dumps(value).decode()]
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def parse_json(data: bytes, settings: Settings) -> JsonInfo | Reject:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        text = str(exc)
        if "utf-8" in text.lower() or "surrogate" in text.lower():
            return Reject(Reason.JSON_INVALID, f"JSON is not valid UTF-8: {text}")
        return Reject(Reason.JSON_INVALID, f"invalid JSON: {text}")
    if not isinstance(obj, dict):
        return Reject(Reason.JSON_NOT_OBJECT, f"JSON is a {type(obj).__name__}, not an object")
    caption, caption_detail = choose_caption(obj, settings.caption_chain)
    width, height, size_detail = json_size(obj, settings.max_dimension)
    source = obj.get("source")
    if source is not None and not isinstance(source, str):
        source = orjson.dumps(source).decode()
    extras = {name: _extra_value(name, obj.get(name)) for name in settings.fields}
    return JsonInfo(caption, caption_detail, width, height, size_detail, source, extras)
