"""The SimpleTuner dataloader config (`multidatabackend.json`) for a converted dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from dalle3_etl.run.webshart import index_generation, vae_cache_dir, webshart_entry
from dalle3_etl.settings import CAPTIONS_COLUMN, Settings
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
            out.out / st.cache_dir_vae if st.cache_dir_vae else default_vae_cache(layout, out, settings)
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
    if settings.webshart:  # the images are read from the tars (run.webshart)
        shared = ("resolution", "maximum_image_size", "minimum_image_size", "target_downsample_size")
        image = webshart_entry(layout, settings, out) | {
            k: image[k] for k in (*shared, "resolution_type", "cache_dir_vae")
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


def default_vae_cache(layout: Layout, out: Layout, settings: Settings) -> Path:
    """OUT/cache/vae/<id>; with --webshart, per generation of the indexes (`run.webshart`: its latents are keyed
    by shard and sample number). `layout`: OUT here, `out`: OUT where it is read from."""
    if settings.webshart:
        return vae_cache_dir(out, settings, index_generation(layout))
    return out.cache("vae", settings.simpletuner.id)


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
    path = layout.dataloader_config
    entries = dataloader_entries(layout, settings, root)
    layout.fs.write_atomic(path, orjson.dumps(entries, option=orjson.OPT_INDENT_2) + b"\n")
    return path
