"""The SimpleTuner dataloader config (`multidatabackend.json`) for a converted dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from dalle3_etl.settings import CAPTIONS_COLUMN, Settings
from dalle3_etl.store.layout import Layout


def dataloader_entries(layout: Layout, settings: Settings) -> list[dict[str, Any]]:
    """One image dataset like the old recipe's hand-written entry, plus the text-embed cache SimpleTuner requires.

    Paths are absolute: SimpleTuner strips `instance_data_dir` from each image path by string replacement.
    """
    out = Layout(layout.out.resolve())
    st = settings.simpletuner
    image = {
        "id": st.id,
        "type": "local",
        "instance_data_dir": str(out.data),
        "resolution": st.resolution,
        "maximum_image_size": st.maximum_image_size,
        "minimum_image_size": st.minimum_image_size,
        "target_downsample_size": st.target_downsample_size,
        "resolution_type": st.resolution_type,
        "cache_dir_vae": str(out.cache("vae", st.id)),
        "caption_strategy": "textfile" if settings.captions else "parquet",
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
    text_embeds = {
        "id": f"{st.id}-text-embeds",
        "type": "local",
        "dataset_type": "text_embeds",
        "default": True,
        "cache_dir": str(out.cache("text", st.id)),
    }
    return [image, text_embeds]


def caption_column(settings: Settings) -> str:
    """The column SimpleTuner takes captions from: with --extra-captions and the parquet strategy, the list of
    every caption (SimpleTuner accepts a list cell); with textfile it reads the .txt files, one caption a line."""
    return CAPTIONS_COLUMN if settings.extra_captions and not settings.captions else "caption"


def write_dataloader_config(layout: Layout, settings: Settings) -> Path:
    path = layout.dataloader_config
    layout.fs.write_atomic(path, orjson.dumps(dataloader_entries(layout, settings), option=orjson.OPT_INDENT_2) + b"\n")
    return path
