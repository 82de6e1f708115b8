"""The SimpleTuner dataloader config (`multidatabackend.json`) for a converted dataset."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import orjson

from dalle3_etl.run.webshart import index_generation, webshart_entry
from dalle3_etl.settings import CAPTIONS_COLUMN, Settings
from dalle3_etl.store.generation import read_generation
from dalle3_etl.store.inplace import input_folder
from dalle3_etl.store.layout import Layout

#: Dataset settings written into the image entry only when set (an entry without them is SimpleTuner's default).
OPTIONAL_KEYS = ("crop", "crop_style", "crop_aspect", "repeats")


def dataloader_entries(layout: Layout, settings: Settings, root: Path | None = None) -> list[dict[str, Any]]:
    """One image dataset like the old recipe's hand-written entry, plus the text-embed cache SimpleTuner requires.

    Paths are absolute, under `root` (where OUT is read from: its resolved path by default, or where it will
    be mounted): SimpleTuner strips `instance_data_dir` from each image path by string replacement.
    """
    out = Layout(Path(root) if root is not None else layout.out.resolve())
    st = settings.simpletuner
    strategy = caption_strategy(layout, settings)
    generation = entry_generation(layout, settings)
    image = {
        "id": st.id,
        "type": "local",
        "instance_data_dir": str(input_folder(layout) or out.data),  # --link none: the input folder
        "resolution": st.resolution,
        "maximum_image_size": st.maximum_image_size,
        "minimum_image_size": st.minimum_image_size,
        "target_downsample_size": st.target_downsample_size,
        "resolution_type": st.resolution_type,
        "cache_dir_vae": str(
            out.out / st.cache_dir_vae if st.cache_dir_vae else vae_cache_dir(out, settings, generation)
        ),
        "caption_strategy": strategy,
        "metadata_backend": "parquet",
        "parquet": {
            "path": str(out.parquet(settings.parquet_name)),
            "caption_column": caption_column(settings, strategy),
            "filename_column": "filename",
            "width_column": "width",
            "height_column": "height",
            "identifier_includes_extension": True,
        },
    }
    image["cache_file_suffix"] = f"{st.id}-{generation}"  # SimpleTuner's bucket caches (store.generation)
    if settings.webshart:  # the images are read from the tars (run.webshart)
        shared = ("resolution", "maximum_image_size", "minimum_image_size", "target_downsample_size")
        image = webshart_entry(layout, settings, out, generation) | {
            k: image[k] for k in (*shared, "resolution_type", "cache_dir_vae", "cache_file_suffix")
        }
    image.update({key: getattr(st, key) for key in OPTIONAL_KEYS if getattr(st, key)})
    text_embeds = {
        "id": f"{st.id}-text-embeds",
        "type": "local",
        "dataset_type": "text_embeds",
        "default": True,
        "cache_dir": str(out.out / st.cache_dir_text if st.cache_dir_text else out.cache("text", st.id)),
    }
    return [image, text_embeds]


#: The entry's settings that decide an image's size, crop and bucket in SimpleTuner (its caches keep them).
GEOMETRY_KEYS = (
    "resolution",
    "resolution_type",
    "minimum_image_size",
    "maximum_image_size",
    "target_downsample_size",
    "crop",
    "crop_style",
    "crop_aspect",
)


def entry_generation(layout: Layout, settings: Settings) -> str:
    """The name of SimpleTuner's caches for this output as it is now: a digest of the output's generation
    (`store.generation`: runs that changed images it may have cached), the settings that decide sizes and
    buckets, and with --webshart the indexes (`run.webshart`: its ids are shard and sample numbers)."""
    st = settings.simpletuner
    parts: list[Any] = [read_generation(layout), {key: getattr(st, key) for key in GEOMETRY_KEYS}]
    if settings.webshart:
        parts.append(index_generation(layout))
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


def caption_strategy(layout: Layout, settings: Settings) -> str:
    """`textfile` where every image SimpleTuner will list has its `<stem>.txt`, else `parquet`.

    --link none writes no caption file without --captions-in-place, and with it the input folder keeps the
    images of its rejected samples (filtered, damaged, name clashes) with no caption file beside them:
    SimpleTuner's textfile strategy stops at start-up on the first one (FileNotFoundError), while the parquet
    strategy skips an image with no row (`metadata_missing`). So an output with rejects uses the parquet."""
    if not settings.captions:
        return "parquet"
    if settings.link != "none":
        return "textfile"
    return "textfile" if settings.captions_in_place and not has_rejects(layout) else "parquet"


def has_rejects(layout: Layout) -> bool:
    """Whether the run rejected any sample (`rejects.jsonl` is merged before the entry is written)."""
    try:
        return layout.merged_rejects.stat().st_size > 0
    except (FileNotFoundError, NotADirectoryError):
        return False


def caption_column(settings: Settings, strategy: str) -> str:
    """The column SimpleTuner takes captions from: with --extra-captions and the parquet strategy, the list of
    every caption (SimpleTuner accepts a list cell); with textfile it reads the .txt files, one caption a line."""
    return CAPTIONS_COLUMN if settings.extra_captions and strategy == "parquet" else "caption"


def write_dataloader_config(layout: Layout, settings: Settings, root: Path | None = None) -> Path:
    """Write OUT's entry. SimpleTuner's caches the entry it replaces named, and this one does not, are then
    unused: `stale_caches` names them (read `entry_cache_generation` before, with the old entry in place)."""
    path = layout.dataloader_config
    entries = dataloader_entries(layout, settings, root)
    layout.fs.write_atomic(path, orjson.dumps(entries, option=orjson.OPT_INDENT_2) + b"\n")
    return path


def suffix_generation(image: dict[str, Any]) -> str | None:
    """The generation an image entry's `cache_file_suffix` ("<id>-<generation>") names; None without one (an entry
    of an earlier version)."""
    dataset_id, suffix = image.get("id"), image.get("cache_file_suffix")
    if isinstance(dataset_id, str) and isinstance(suffix, str) and suffix.startswith(dataset_id + "-"):
        return suffix[len(dataset_id) + 1 :]
    return None


def vae_cache_dir(layout: Layout, settings: Settings, generation: str) -> Path:
    """The entry's default VAE cache, under OUT, for its `generation` (`entry_generation`)."""
    return layout.cache("vae", settings.simpletuner.id) / generation


def entry_cache_generation(layout: Layout) -> tuple[str, str] | None:
    """(id, generation) of the caches OUT's present entry names (`cache_file_suffix` "<id>-<generation>"); None
    for an entry without one (written by an earlier version) or no entry."""
    try:
        entries = orjson.loads(layout.dataloader_config.read_bytes())
        image = next(e for e in entries if isinstance(e, dict) and e.get("dataset_type", "image") == "image")
    except (OSError, orjson.JSONDecodeError, StopIteration, TypeError):
        return None
    generation = suffix_generation(image)
    return None if generation is None else (image["id"], generation)


def stale_caches(before: tuple[str, str] | None, layout: Layout) -> list[Path]:
    """SimpleTuner's caches, in OUT (or the --link none input folder) as they are here, of the entry that named
    generation `before` (`entry_cache_generation`, read before the entry was rewritten), when the present entry
    names another: the VAE and webshart cache folders and the bucket cache files of that generation that exist.
    SimpleTuner's files: the tool names them to the user and never removes them."""
    now = entry_cache_generation(layout)
    if before is None or now is None or before == now:
        return []
    dataset_id, generation = before
    suffix = f"{dataset_id}-{generation}"
    bucket_dirs = [input_folder(layout) or layout.data, layout.cache("webshart", dataset_id) / generation]
    candidates = [layout.cache("vae", dataset_id) / generation, layout.cache("webshart", dataset_id) / generation]
    candidates += [
        d / f"aspect_ratio_bucket_{kind}_{suffix}.json" for d in bucket_dirs for kind in ("indices", "metadata")
    ]
    live = [layout.cache("vae", now[0]) / now[1], layout.cache("webshart", now[0]) / now[1]]
    found = [p for p in dict.fromkeys(candidates) if os.path.lexists(p)]
    return [p for p in found if not any(p == q or q.is_relative_to(p) for q in live)]
