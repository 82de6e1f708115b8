"""A conversion script built on the `webdataset` library: what a user might write instead of the old recipe.

It reads the shards with `webdataset.WebDataset` (samples = adjacent members grouped by key, WebDataset's
convention), and produces what the old recipe produces: ``OUT/dalle3.parquet`` (pandas, columns width,
height, caption = short_caption, filename), one ``OUT/data/<stem>.txt`` caption file per sample and the
image bytes in ``OUT/data/`` (``--no-images`` skips them), skipping JSONs without ``width`` like the
old recipe. Unlike the old recipe it names files after the tar member (not the JSON's ``image_name``),
so parquet rows, images and captions agree.

WebDataset splits the key at the FIRST dot of the basename: ``000123.v2.jpg`` becomes key ``000123``
with extension ``v2.jpg``; the script takes the extensions as they come and rebuilds the member name.

Shards are spread over ``--workers`` processes (``multiprocessing.Pool``, one shard per task); rows come
back to the parent, which holds them all and writes the parquet at the end.

usage: python wds_baseline.py OUT SHARD.tar [SHARD.tar ...] [--workers N] [--no-images]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def convert_shard(job: tuple[str, str, bool]) -> list[dict]:
    import webdataset as wds

    shard, data_dir, write_images = job
    rows = []
    dataset = wds.WebDataset([shard], shardshuffle=False, handler=wds.warn_and_continue, empty_check=False)
    for sample in dataset:
        key = sample["__key__"]
        json_ext = next((k for k in sample if k.lower().endswith("json")), None)
        image_ext = next((k for k in sample if k.lower().rsplit(".", 1)[-1] in IMAGE_EXTS), None)
        if json_ext is None or image_ext is None:
            continue
        meta = json.loads(sample[json_ext])
        if "width" not in meta:
            continue
        filename = f"{os.path.basename(key)}.{image_ext}"
        stem = filename[: filename.rfind(".")]
        if write_images:
            with open(os.path.join(data_dir, filename), "wb") as f:
                f.write(sample[image_ext])
        caption = meta.get("short_caption") or ""
        with open(os.path.join(data_dir, stem + ".txt"), "w") as f:
            f.write(caption)
        rows.append({"width": meta["width"], "height": meta["height"], "caption": caption, "filename": filename})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("shards", nargs="+")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-images", action="store_true")
    args = parser.parse_args(argv)

    import pandas as pd

    data_dir = os.path.join(args.out, "data")
    os.makedirs(data_dir, exist_ok=True)
    jobs = [(shard, data_dir, not args.no_images) for shard in args.shards]
    if args.workers > 1:
        with multiprocessing.get_context("fork").Pool(args.workers) as pool:
            parts = pool.map(convert_shard, jobs, chunksize=1)
    else:
        parts = [convert_shard(job) for job in jobs]
    rows = [row for part in parts for row in part]
    df = pd.DataFrame(rows, columns=["width", "height", "caption", "filename"])
    out = os.path.join(args.out, "dalle3.parquet")
    df.to_parquet(out, index=False)
    print(f"{len(df)} rows -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
