"""The SimpleTuner dataloader config (`multidatabackend.json`) for a converted dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from dalle3_etl.run.webshart import webshart_entry
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
    image = {
        "id": st.id,
        "type": "local",
        "instance_data_dir": str(input_folder(layout) or out.data),  # --link none: the input folder
        "resolution": st.resolution,
        "maximum_image_size": st.maximum_image_size,
        "minimum_image_size": st.minimum_image_size,
        "target_downsample_size": st.target_downsample_size,
        "resolution_type": st.resolution_type,
        "cache_dir_vae": str(out.out / st.cache_dir_vae if st.cache_dir_vae else out.cache("vae", st.id)),
        "caption_strategy": "textfile"
        if settings.captions and (settings.link != "none" or settings.captions_in_place)
        else "parquet",  # --link none without --captions-in-place: no caption file anywhere
        "metadata_backend": "parquet",
        "parquet": {
            "path": str(out.parquet(settings.parquet_name)),
            "caption_column": caption_column(settings),
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


def caption_column(settings: Settings) -> str:
    """The column SimpleTuner takes captions from: with --extra-captions and the parquet strategy, the list of
    every caption (SimpleTuner accepts a list cell); with textfile it reads the .txt files, one caption a line."""
    return CAPTIONS_COLUMN if settings.extra_captions and not settings.captions else "caption"


def write_dataloader_config(layout: Layout, settings: Settings, root: Path | None = None) -> Path:
    path = layout.dataloader_config
    entries = dataloader_entries(layout, settings, root)
    layout.fs.write_atomic(path, orjson.dumps(entries, option=orjson.OPT_INDENT_2) + b"\n")
    return path
