"""Synthetic img2dataset-style WebDataset corpus: what ``img2dataset --output_format webdataset`` writes.

Shards are named like img2dataset's (``00000.tar``, ``00001.tar``...), keys are the shard number then the
sample number (``000000003``), and each sample has three members written in the order webdataset's
``TarWriter`` writes a sample's fields (sorted by extension): the image (``.webp``, or ``.jpg`` when Pillow
cannot write WebP), ``<key>.json`` with img2dataset's fields (``url``, ``key``, ``status``, ``error_message``,
``width``, ``height``, ``original_width``, ``original_height``, ``exif``, ``sha256``, ``caption``) and
``<key>.txt``, the caption (blanks mangled; empty for some samples, as img2dataset writes a missing caption).
img2dataset writes only successful downloads into its tars (failed ones go to the shard's parquet only), so
every JSON here says ``"status": "success"``.

WebP images cycle through the three kinds a header reader must know: lossy (``VP8 ``), lossless
(``VP8L``) and extended (``VP8X``, with alpha). ``truth.jsonl`` holds what ``convert --caption-field txt``
must output for each sample (size from the image; caption cleaned, None when the ``.txt`` is empty).
"""

from __future__ import annotations

import hashlib
import io
import random
from functools import cache
from pathlib import Path

import orjson

from dalle3_etl.devtools.synth.captions import _dirty, _short_caption, clean_caption
from dalle3_etl.devtools.synth.spec import TruthRow, write_truth
from dalle3_etl.devtools.synth.tarwrite import write_tar
from dalle3_etl.store.fsio import Root

STYLE = "img2dataset"
_SIZES = ((256, 256), (384, 256), (256, 384), (320, 200))
_WEBP_KINDS = ("lossy", "lossless", "alpha")
EMPTY_CAPTION_EVERY = 50  # every 50th sample (from the 7th) has an empty .txt and a null JSON caption


def webp_available() -> bool:
    from PIL import features

    return bool(features.check("webp"))


def i2d_shard_name(shard_index: int) -> str:
    return f"{shard_index:05d}"


@cache
def _image(fmt: str, kind: str, width: int, height: int) -> bytes:
    """A small image, once per (format, kind, size): WebP lossy / lossless / with alpha (VP8X), or JPEG."""
    from PIL import Image

    mode = "RGBA" if kind == "alpha" and fmt == "webp" else "RGB"
    img = Image.new(mode, (width, height), (width % 256, height % 256, 90, 200)[: len(mode)])
    buf = io.BytesIO()
    if fmt == "webp":
        img.save(buf, "WEBP", lossless=kind == "lossless", quality=60)
    else:
        img.save(buf, "JPEG", quality=60)
    return buf.getvalue()


def _sample(shard_index: int, i: int, fmt: str, rng: random.Random) -> tuple[TruthRow, list[tuple[str, bytes]]]:
    key = f"{shard_index:05d}{i:04d}"
    width, height = _SIZES[rng.randrange(len(_SIZES))]
    img = _image(fmt, _WEBP_KINDS[i % len(_WEBP_KINDS)], width, height)
    caption = "" if i % EMPTY_CAPTION_EVERY == 7 else _dirty(_short_caption(rng), rng)
    meta = {
        "url": f"https://example.com/img/{key}.{fmt}",
        "caption": caption or None,
        "key": key,
        "status": "success",
        "error_message": None,
        "width": width,
        "height": height,
        "original_width": width * 3,
        "original_height": height * 3,
        "exif": "{}",
        "sha256": hashlib.sha256(img).hexdigest(),
    }
    ext = "jpg" if fmt == "jpeg" else fmt
    members = {ext: img, "json": orjson.dumps(meta, option=orjson.OPT_INDENT_2), "txt": caption.encode()}
    row = TruthRow(
        shard=i2d_shard_name(shard_index),
        key=key,
        image_member=f"{key}.{ext}",
        json_member=f"{key}.json",
        width=width,
        height=height,
        caption=clean_caption(caption) or None,
        source=None,
        json_has_size=True,
    )
    return row, [(f"{key}.{e}", members[e]) for e in sorted(members)]


def write_img2dataset_corpus(
    out_dir: Path | str, shards: int = 2, per_shard: int = 100, seed: int = 0, image_format: str = ""
) -> list[TruthRow]:
    """Write ``out_dir/00000.tar``... and ``truth.jsonl``; returns the truth rows (shard then member order).
    `image_format`: "webp" or "jpeg"; "" = webp when Pillow can write it, else jpeg. Same arguments, same bytes."""
    fmt = image_format or ("webp" if webp_available() else "jpeg")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[TruthRow] = []
    for s in range(shards):
        rng = random.Random(f"{seed}:{STYLE}:{s}")
        members: list[tuple[str, bytes]] = []
        for i in range(per_shard):
            row, sample = _sample(s, i, fmt, rng)
            rows.append(row)
            members += sample
        path = out_dir / f"{i2d_shard_name(s)}.tar"
        tmp = path.with_name(f".{path.name}.partial")
        write_tar(tmp, members)
        Root(out_dir).replace(tmp, path)
    write_truth(out_dir / "truth.jsonl", rows)
    return rows
