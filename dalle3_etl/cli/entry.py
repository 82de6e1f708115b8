"""`dalle3-etl entry`: the SimpleTuner entry (and other trainers' files) written again for where OUT is now."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from dalle3_etl.cli.core import command, csv_list
from dalle3_etl.safetext import safe


# Over 60 lines: one line per option declaration (typer); the body is a few lines.
@command("entry")
def entry_cmd(
    out: Path = typer.Argument(..., help="An output directory of convert (maybe copied or moved)."),
    mount_path: Path | None = typer.Option(
        None, "--mount-path", metavar="PATH", help="Write the entry for the path OUT will have on the training machine."
    ),
    config: Path | None = typer.Option(None, "--config", help="TOML file whose \\[simpletuner] table sets values."),
    dataset_id: str | None = typer.Option(None, "--id", help="Dataset id (also names the cache folders)."),
    resolution: float | None = typer.Option(None, help="SimpleTuner resolution."),
    resolution_type: str | None = typer.Option(None, help="area, pixel or pixel_area."),
    minimum_image_size: float | None = typer.Option(None, help="Smaller images are skipped by SimpleTuner."),
    maximum_image_size: float | None = typer.Option(None, help="Larger images are downsampled first."),
    target_downsample_size: float | None = typer.Option(None, help="Size large images are downsampled to."),
    crop: bool | None = typer.Option(None, "--crop/--no-crop", help="Crop to the training resolution."),
    crop_style: str | None = typer.Option(None, help='random, center, corner or face ("" = SimpleTuner\'s).'),
    crop_aspect: str | None = typer.Option(None, help='square, preserve, random or closest ("" = SimpleTuner\'s).'),
    repeats: int | None = typer.Option(None, help="Times SimpleTuner repeats the dataset per epoch (0: not set)."),
    cache_dir_vae: str | None = typer.Option(None, help='VAE cache folder (relative: under OUT; "": default).'),
    cache_dir_text: str | None = typer.Option(None, help="Text-embed cache folder (relative: under OUT)."),
    also: str | None = typer.Option(
        None, "--also", metavar="KINDS", help="Also write: imagefolder (OUT/data/metadata.jsonl, Hugging Face)."
    ),
) -> None:
    """Write OUT/multidatabackend.json again for where OUT is now (after a copy or move) or --mount-path.

    Dataset settings are kept from the present entry unless changed here; OUT's pinned output settings are not
    changed. Exit 2 on a bad setting (the file is left as it was).
    """
    from dalle3_etl.run.entry import entry_cache_generation, stale_caches
    from dalle3_etl.run.portable import rewrite_entry
    from dalle3_etl.store.layout import Layout

    before = entry_cache_generation(Layout(Path(out).absolute()))
    path = rewrite_entry(
        out,
        mount_path=mount_path,
        config=config,
        also=csv_list(also) or (),
        id=dataset_id,
        resolution=resolution,
        resolution_type=resolution_type,
        minimum_image_size=minimum_image_size,
        maximum_image_size=maximum_image_size,
        target_downsample_size=target_downsample_size,
        crop=crop,
        crop_style=crop_style,
        crop_aspect=crop_aspect,
        repeats=repeats,
        cache_dir_vae=cache_dir_vae,
        cache_dir_text=cache_dir_text,
    )
    Console().print(safe(f"wrote {path}"))
    stale = stale_caches(before, Layout(Path(out).absolute()))
    if stale:  # other sizes or buckets: SimpleTuner starts new caches
        Console().print(
            safe(
                "SimpleTuner's caches of the earlier entry are no longer read (its files, left as they are; "
                "remove them when you like): " + ", ".join(map(str, stale))
            )
        )
    if "imagefolder" in (csv_list(also) or ()):
        Console().print(safe(f"wrote {Layout(out).imagefolder_metadata}"))
