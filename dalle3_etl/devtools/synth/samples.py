"""One shard's samples, drawn from the shard's own RNG in a fixed order: per sample a key, an image, a
source, a caption (and where it sits among the caption fields) and the JSON member, plus its truth row."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

import orjson

from dalle3_etl.devtools.synth.captions import _MISSING, _SUBJECTS, _caption_fields, _long_caption, _short_caption
from dalle3_etl.devtools.synth.images import (
    _DALLE_SIZES,
    _EXT_CHOICES,
    _EXT_WEIGHTS,
    _FORMAT_OF_EXT,
    _SIZE_CHOICES,
    _SIZE_WEIGHTS,
    _base_image,
    _pad_image,
)
from dalle3_etl.devtools.synth.spec import SynthSpec, TruthRow, shard_name

_SUBREDDITS = ("dalle2", "dalle3", "ChatGPT", "bing", "weirddalle", "aiArt", "DALLE3Art", "laion_share_dalle3")
_OTHER_SOURCES = ("midjourney", "StableDiffusion", "aiArt", "sdxl", "laion_share_midjourney")

_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int) -> str:
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_B36[r])
    return "".join(out) or "0"


def _exact_count(n: int, ratio: float, rng: random.Random) -> int:
    """ratio * n rounded stochastically (exact in expectation, deterministic per rng)."""
    x = ratio * n
    k = int(x)
    if rng.random() < x - k:
        k += 1
    return min(k, n)


def _image_name(member: str, key: str, ext: str, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.92:
        return member
    if r < 0.95:
        stamp = f"2023-{rng.randint(10, 12)}-{rng.randint(10, 28)} {rng.randint(10, 23)}.{rng.randint(10, 59)}.{rng.randint(10, 59)}"
        return f"DALL·E {stamp} - {rng.choice(_SUBJECTS)}.png"
    if r < 0.98:
        return f"{rng.getrandbits(128):032x}.{rng.choice(_EXT_CHOICES)}"
    other = "png" if ext != "png" else "jpg"
    return f"{key}.{other}"


def _url(source: str | None, rng: random.Random) -> str:
    tok = _base36(rng.getrandbits(64))[:13]
    if source and source.startswith("laion_share"):
        return f"https://cdn.discordapp.com/attachments/{rng.randint(10**17, 10**18)}/{rng.randint(10**17, 10**18)}/{tok}.png"
    return f"https://i.redd.it/{tok}.{rng.choice(('png', 'jpeg', 'jpg'))}"


def _shard_rng(seed: int, shard_index: int) -> random.Random:
    return random.Random(f"dalle3-etl-synth:{seed}:{shard_index}")


def _shard_samples(spec: SynthSpec, shard_index: int, rows: list[TruthRow]) -> Iterator[tuple[str, bytes]]:
    """Yield the shard's tar members in order (streaming: memory stays flat); append truth rows to ``rows``."""
    rng = _shard_rng(spec.seed, shard_index)
    stem = shard_name(shard_index)
    kind, level, missing_size = _shard_plan(spec, rng)
    base_index = spec.start_index + shard_index * spec.per_shard
    for i in range(spec.per_shard):
        row, members = _sample(spec, rng, stem, base_index + i, kind[i], level[i], missing_size[i])
        rows.append(row)
        yield from members


def _shard_plan(spec: SynthSpec, rng: random.Random) -> tuple[list[str], list[int], list[bool]]:
    """Per sample position: its kind ("normal", "fallback", "none"), the caption field a fallback sample
    takes its caption from, and whether its JSON lacks the size."""
    n = spec.per_shard
    # Exact per-shard counts at random positions (so small corpora still contain every case).
    order = list(range(n))
    rng.shuffle(order)
    n_none = _exact_count(n, spec.no_caption_ratio, rng)
    n_fb = min(n - n_none, _exact_count(n, spec.fallback_ratio, rng))
    kind = ["normal"] * n
    level = [0] * n
    fb_offset = rng.randrange(4)
    for pos in order[:n_none]:
        kind[pos] = "none"
    for j, pos in enumerate(order[n_none : n_none + n_fb]):
        kind[pos] = "fallback"
        level[pos] = 1 + (j + fb_offset) % 4  # cycle long_caption, short_caption2, long_caption2, original_prompt
    missing_size = [False] * n
    for pos in rng.sample(range(n), _exact_count(n, spec.missing_size_ratio, rng)):
        missing_size[pos] = True
    return kind, level, missing_size


def _sample(
    spec: SynthSpec, rng: random.Random, stem: str, gidx: int, kind: str, level: int, missing_size: bool
) -> tuple[TruthRow, list[tuple[str, bytes]]]:
    """One sample: its truth row and its two members in tar order."""
    key = f"{gidx:06d}"
    if rng.random() < 0.03:
        key += rng.choice((".v2", ".alt", ".1", ".orig", ".upscaled.2x"))
    ext, width, height, img, pil_md5 = _sample_image(spec, rng, stem, key)
    image_member = f"{key}.{ext}"
    json_member = f"{key}.json"

    if (width, height) in _DALLE_SIZES:
        source = rng.choice(_SUBREDDITS) if rng.random() < 0.9 else None
    else:
        source = rng.choice(_OTHER_SOURCES) if rng.random() < 0.9 else None

    truth: str | None
    if kind == "none":
        truth = None
    elif kind == "fallback" and level == 1:
        truth = _long_caption(rng)
    else:
        truth = _short_caption(rng)
    caps = _caption_fields(kind, level, truth, rng)
    jbytes = _json_member(rng, key, ext, image_member, img, pil_md5, width, height, source, caps, missing_size)

    json_first = rng.random() < spec.json_first_ratio
    row = TruthRow(
        shard=stem,
        key=key,
        image_member=image_member,
        json_member=json_member,
        width=width,
        height=height,
        caption=truth,
        source=source,
        json_has_size=not missing_size,
    )
    if json_first:
        return row, [(json_member, jbytes), (image_member, img)]
    return row, [(image_member, img), (json_member, jbytes)]


def _sample_image(spec: SynthSpec, rng: random.Random, stem: str, key: str) -> tuple[str, int, int, bytes, str]:
    """(extension, width, height, image bytes, md5 of its pixels) of one sample."""
    ext = rng.choices(_EXT_CHOICES, _EXT_WEIGHTS)[0]
    fmt = _FORMAT_OF_EXT[ext]
    width, height = rng.choices(_SIZE_CHOICES, _SIZE_WEIGHTS)[0]
    progressive = fmt == "jpeg" and rng.random() < 0.15
    decoy = fmt == "jpeg" and rng.random() < 0.25
    base, pil_md5 = _base_image(fmt, width, height, progressive)
    img = _pad_image(
        fmt, base, spec.image_bytes, rng, decoy=decoy, tag=f"{stem}/{key}:".encode(), width=width, height=height
    )
    return ext, width, height, img, pil_md5


def _json_member(
    rng: random.Random,
    key: str,
    ext: str,
    image_member: str,
    img: bytes,
    pil_md5: str,
    width: int,
    height: int,
    source: str | None,
    caps: dict[str, object],
    missing_size: bool,
) -> bytes:
    """The sample's JSON, fields as upstream (absent ones left out)."""
    doc: dict[str, object] = {
        "image_name": _image_name(image_member, key, ext, rng),
        "md5_pil_hash": pil_md5,
        "md5_file_hash": hashlib.md5(img).hexdigest(),
        "sha512_hash": hashlib.sha512(img).hexdigest(),
        "short_caption": caps["short_caption"],
        "long_caption": caps["long_caption"],
        "resolution": f"{width}x{height}",
        "url": _url(source, rng),
        "width": width,
        "height": height,
        "source": source if source is not None else _MISSING,
        "original_prompt": caps["original_prompt"],
        "short_caption2": caps["short_caption2"],
        "long_caption2": caps["long_caption2"],
    }
    if missing_size:
        del doc["width"], doc["height"], doc["resolution"]
    return orjson.dumps({k2: v for k2, v in doc.items() if v is not _MISSING})
