"""OUT's manifest (`.dalle3-etl/manifest.json`): the settings that change the output, pinned by the first run.

A later run with other such settings is refused (`settings_differences` says how they differ) rather than
mixing two settings in one dataset; `--restart` removes the manifest last.
"""

from __future__ import annotations

from typing import Any

import orjson

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


def settings_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: was {old.get(k)!r}, now {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
