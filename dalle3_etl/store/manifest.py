"""OUT's manifest (`.dalle3-etl/manifest.json`): the settings that change the output, pinned by the first run.

A later run with other such settings is refused (`settings_differences` says how they differ) rather than
mixing two settings in one dataset; `--restart` removes the manifest last.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from dalle3_etl.settings import Settings
from dalle3_etl.store.layout import Layout

MANIFEST_VERSION = 1


def read_manifest(layout: Layout) -> dict[str, Any] | None:
    try:
        return orjson.loads(layout.manifest.read_bytes())
    except FileNotFoundError:
        return None


def write_manifest(layout: Layout, settings_fingerprint: dict[str, Any]) -> None:
    layout.fs.write_atomic(
        layout.manifest,
        orjson.dumps({"version": MANIFEST_VERSION, "settings": settings_fingerprint}, option=orjson.OPT_INDENT_2),
    )


def pinned_settings(layout: Layout) -> dict[str, Any]:
    """The output-changing settings OUT was converted with ({} before its first run)."""
    return (read_manifest(layout) or {}).get("settings", {})


def pinned_parquet(layout: Layout, pinned: dict[str, Any] | None = None) -> Path:
    """OUT's parquet as the pinned settings name it (the default name when they do not, or before the first run)."""
    pinned = pinned_settings(layout) if pinned is None else pinned
    return layout.parquet(pinned.get("parquet_name", Settings.parquet_name))  # the class attribute is the default


def settings_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: was {old.get(k)!r}, now {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
