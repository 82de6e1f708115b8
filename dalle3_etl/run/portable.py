"""`dalle3-etl entry OUT`: write OUT's SimpleTuner entry again, for where OUT is now or will be mounted.

SimpleTuner needs absolute paths, so a copied or moved OUT still names its old place until its entry is
written again. The dataset settings of the entry are kept from the entry there (then changed by the
`[simpletuner]` table of a config file and by flags); the pinned output settings come from OUT's manifest
and are never changed here.
"""

from __future__ import annotations

import os
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import orjson

from dalle3_etl.errors import UsageError
from dalle3_etl.run.entry import suffix_generation, write_dataloader_config
from dalle3_etl.run.imagefolder import refuse_foreign_metadata, write_imagefolder
from dalle3_etl.settings import OUTPUT_KEYS, Settings, SimpleTunerSettings, simpletuner_values
from dalle3_etl.store.inplace import input_folder
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.locks import RunLock
from dalle3_etl.store.manifest import read_manifest


def rewrite_entry(
    out: Path,
    *,
    mount_path: Path | None = None,
    config: Path | None = None,
    also: tuple[str, ...] = (),
    **overrides: Any,
) -> Path:
    """Write OUT/multidatabackend.json for OUT's present path (or `mount_path`); returns its path. `also`:
    the other outputs to write as well ("imagefolder": OUT/data/metadata.jsonl).

    Every setting is checked before the file is touched: a bad one leaves it as it was."""
    layout = Layout(Path(out).absolute())
    manifest = read_manifest(layout) if layout.state.is_dir() else None
    if manifest is None:
        raise UsageError(f"{out} is not a converted dalle3-etl output (convert writes its entry)")
    if mount_path is not None and not os.path.isabs(mount_path):
        raise UsageError(f"--mount-path {mount_path}: must be absolute (SimpleTuner needs absolute paths)")
    pinned = {k: v for k, v in manifest.get("settings", {}).items() if k in OUTPUT_KEYS}
    current = _entry_values(layout)
    st = simpletuner_values(current, f"{layout.dataloader_config}: ", config, **overrides)
    settings = replace(Settings(**pinned), simpletuner=st)
    if also:
        settings = replace(settings, also=also)  # checked with the pinned settings (images, fields)
        refuse_foreign_metadata(layout)
    root = Path(os.path.normpath(mount_path)) if mount_path is not None else layout.out.resolve()
    with RunLock(layout.lock):  # not while a convert writes OUT (its merge rewrites both files)
        path = write_dataloader_config(layout, settings, root)
        if "imagefolder" in also:
            write_imagefolder(layout, settings)
    return path


_PLAIN_KEYS = tuple(f.name for f in fields(SimpleTunerSettings) if not f.name.startswith("cache_dir"))


def _entry_values(layout: Layout) -> dict[str, Any]:
    """The SimpleTuner settings the present entry holds ({} when there is no usable entry). A cache folder
    is kept only when it is not the default one; one under the entry's old OUT is kept relative to OUT."""
    try:
        entries = orjson.loads(layout.dataloader_config.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return {}
    if not isinstance(entries, list):
        return {}
    kinds = {e.get("dataset_type", "image"): e for e in reversed(entries) if isinstance(e, dict)}
    image, text = kinds.get("image", {}), kinds.get("text_embeds", {})
    values = {key: image[key] for key in _PLAIN_KEYS if key in image}
    data_dir = image.get("instance_data_dir")
    if input_folder(layout) is not None:  # --link none: instance_data_dir is the input folder; OUT holds the parquet
        data_dir = (image.get("parquet") or {}).get("path") if isinstance(image.get("parquet"), dict) else None
    generation = suffix_generation(image)  # of the present entry's caches
    if isinstance(data_dir, str) and os.path.isabs(data_dir) and isinstance(values.get("id"), str):
        old = Layout(Path(data_dir).parent)
        cached = (
            ("cache_dir_vae", "vae", image.get("cache_dir_vae")),
            ("cache_dir_text", "text", text.get("cache_dir")),
        )
        for key, kind, value in cached:
            defaults = {old.cache(kind, values["id"])}  # an earlier version's; the VAE one now per generation
            if kind == "vae" and generation is not None:
                defaults.add(old.cache(kind, values["id"]) / generation)
            if isinstance(value, str) and value and Path(value) not in defaults:
                values[key] = _relative_to(Path(value), old.out)
    return values


def _relative_to(path: Path, root: Path) -> str:
    """`path` relative to `root` when under it (it moves with OUT), else as it is."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


__all__ = ["rewrite_entry"]
