"""Realistic synthetic DALLE-3-style corpus: tar shards of image + JSON samples, with a known truth.

Used by the tests, by ``make run`` and by the benchmarks.  Every shard looks like a real
``data-NNNNNN.tar`` of ProGamerGov/synthetic-dataset-1m-dalle3-high-quality-captions (69 shards of
5-10 GB on the Hub): plain uncompressed GNU tar, members ``<key>.<ext>`` + ``<key>.json`` adjacent, JSON
fields as upstream (image_name, md5_pil_hash, md5_file_hash, sha512_hash, short_caption, long_caption,
resolution "WxH", url, width, height, source, original_prompt, short_caption2 and long_caption2 as lists
of strings; some samples lack fields, width/height included).  Alongside the shards, ``truth.jsonl`` records, per sample, what a
converter running with DEFAULT settings must output (size from the image header, cleaned caption, or
``None`` when the sample must be rejected).

Things a converter has to get right on this corpus (all by construction, all recorded in the truth):

* keys may contain dots (``000123.v2.jpg`` -> key ``000123.v2``): key = member name minus its LAST extension;
* the JSON member comes before or after its image;
* ``image_name`` in the JSON sometimes differs from the member name (never rely on it);
* some JSONs lack ``width``/``height``/``resolution``: the size must come from the image header;
* JPEGs carry COM segments before the SOF marker (readers must walk segments), some containing a decoy
  ``FF C0`` SOF-looking byte sequence with a wrong size; some JPEGs are progressive (SOF2);
* captions contain newlines, CR/LF, tabs, runs of spaces, non-breaking spaces, leading/trailing blanks,
  non-ASCII text and emoji; the truth is ``" ".join(text.split())``;
* some samples have no usable ``short_caption`` and take the caption from the fallback chain
  ``long_caption``, ``short_caption2``, ``long_caption2``, ``original_prompt`` (a list gives its first
  non-empty string after cleaning); some have no usable caption at all (truth caption ``None``).

Each shard is generated from its own RNG, seeded by ``(seed, shard_index)``: shard *k* has the same bytes
whatever the number of shards, so a corpus can be grown later (``shards=4`` after ``shards=2``, or
``first_shard=2``) and rewriting an identical shard leaves the existing file (and its mtime) untouched.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import os
import random
import struct
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import orjson

from dalle3_etl.store.fsio import Root

__all__ = [
    "SynthSpec",
    "TruthRow",
    "CAPTION_FIELDS",
    "clean_caption",
    "make_image",
    "write_tar",
    "write_shard",
    "write_corpus",
    "read_truth",
    "write_truth",
    "shard_name",
    "main",
]

#: Default caption field followed by the default fallback chain, in order.
CAPTION_FIELDS: tuple[str, ...] = ("short_caption", "long_caption", "short_caption2", "long_caption2", "original_prompt")

#: Fixed tar member metadata (determinism: same spec -> identical bytes).
TAR_MTIME = 1_700_000_000
TAR_UID = 1000
TAR_GID = 1000
TAR_UNAME = "user"
TAR_GNAME = "user"
TAR_MODE = 0o644


@dataclass(frozen=True)
class SynthSpec:
    shards: int = 2
    per_shard: int = 100
    seed: int = 0
    image_bytes: int = 24_000  # approximate size of each image member (padded with random bytes; unique per sample)
    missing_size_ratio: float = 0.05  # JSON without width/height/resolution -> size only from the image header
    no_caption_ratio: float = 0.01  # no usable caption in any caption field -> must be rejected
    fallback_ratio: float = 0.05  # short_caption missing/empty/whitespace, caption from the fallback chain
    json_first_ratio: float = 0.5  # JSON member written before its image (else after)
    start_index: int = 0  # global sample numbering start
    first_shard: int = 0  # write_corpus writes shards first_shard .. first_shard + shards - 1

    def __post_init__(self) -> None:
        if self.shards < 0 or self.per_shard < 0 or self.first_shard < 0 or self.start_index < 0:
            raise ValueError("shards, per_shard, first_shard and start_index must be >= 0")
        if self.image_bytes < 0:
            raise ValueError("image_bytes must be >= 0")
        for name in ("missing_size_ratio", "no_caption_ratio", "fallback_ratio", "json_first_ratio"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.no_caption_ratio + self.fallback_ratio > 1.0:
            raise ValueError("no_caption_ratio + fallback_ratio must be <= 1")


@dataclass(frozen=True)
class TruthRow:
    shard: str  # shard file stem, e.g. "data-000000"
    key: str  # member name without its last extension (may contain dots)
    image_member: str
    json_member: str
    width: int  # true size, as written in the image header
    height: int
    caption: str | None  # expected output caption with default settings (cleaned); None = must be rejected
    source: str | None
    json_has_size: bool


def clean_caption(text: str) -> str:
    """The converter's default caption cleaning: whitespace runs (incl. newlines) -> one space, ends trimmed."""
    return " ".join(text.split())


def shard_name(shard_index: int) -> str:
    return f"data-{shard_index:06d}"


# ----------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------

_DALLE_SIZES = ((1024, 1024), (1792, 1024), (1024, 1792))
_OTHER_SIZES = ((512, 768), (1344, 768), (896, 1152), (2048, 2048), (768, 512), (1152, 896))
_SIZE_CHOICES = _DALLE_SIZES + _OTHER_SIZES
_SIZE_WEIGHTS = (60, 14, 14) + (2,) * len(_OTHER_SIZES)  # 88 % DALLE-3 sizes, 12 % others

_EXT_CHOICES = ("jpg", "jpeg", "png")
_EXT_WEIGHTS = (70, 10, 20)
_FORMAT_OF_EXT = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png"}


def _norm_fmt(fmt: str) -> str:
    f = fmt.lower().lstrip(".")
    if f in ("jpg", "jpeg"):
        return "jpeg"
    if f == "png":
        return "png"
    raise ValueError(f"unsupported image format {fmt!r} (jpeg/jpg/png)")


@lru_cache(maxsize=None)
def _base_image(fmt: str, width: int, height: int, progressive: bool) -> tuple[bytes, str]:
    """Encode a solid-colour image once per (format, size, progressive); return (bytes, md5 of its pixels)."""
    from PIL import Image  # imported lazily: the converter does not need Pillow to import this module

    colour = ((width * 7 + height) % 256, (width + height * 3) % 256, (width ^ height) % 256)
    img = Image.new("RGB", (width, height), colour)
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, "JPEG", quality=50, optimize=True, progressive=progressive)
    else:
        img.save(buf, "PNG")
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        pil_md5 = hashlib.md5(im.tobytes()).hexdigest()
    return data, pil_md5


def _jpeg_insert_point(data: bytes) -> int:
    """Offset just after SOI and the APP0/APPn segments that Pillow writes first (before DQT/SOF)."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and 0xE0 <= data[pos + 1] <= 0xEF:
        (seglen,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + seglen
    return pos


def _jpeg_com_segments(payload: bytes) -> bytes:
    out = bytearray()
    for i in range(0, len(payload), 65533):
        chunk = payload[i : i + 65533]
        out += b"\xff\xfe" + struct.pack(">H", len(chunk) + 2) + chunk
    return bytes(out)


def _png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def make_image(
    fmt: str,
    width: int,
    height: int,
    nbytes: int,
    rng: random.Random,
    *,
    progressive: bool = False,
    decoy: bool = False,
    tag: bytes = b"",
) -> bytes:
    """A valid image of the given format and size, padded to about ``nbytes`` with random bytes.

    ``fmt``: "jpeg"/"jpg"/"png".  JPEG padding goes into COM segments placed BEFORE the DQT/SOF markers
    (a header reader must walk the segments); with ``decoy=True`` the padding starts with a byte sequence
    that looks like an SOF0 marker of a wrong size (like an EXIF thumbnail would).  PNG padding goes into a
    private ancillary chunk ``paDd`` before IEND.  ``tag`` is put first in the padding (use it to make
    bytes unique).  At least 16 random bytes are always added, so two calls never return the same bytes.
    The result opens with Pillow and ``Image.open(...).size == (width, height)``.
    """
    f = _norm_fmt(fmt)
    base, _ = _base_image(f, int(width), int(height), bool(progressive) and f == "jpeg")
    return _pad_image(f, base, nbytes, rng, decoy=decoy, tag=tag, width=width, height=height)


def _pad_image(
    f: str, base: bytes, nbytes: int, rng: random.Random, *, decoy: bool, tag: bytes, width: int, height: int
) -> bytes:
    if f == "jpeg":
        head = b""
        if decoy:
            # Looks like "FF C0 len 8 H W 3 ..." with a wrong size (e.g. a thumbnail's SOF).
            head = b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", max(1, height // 8), max(1, width // 8)) + b"\x03"
        overhead = len(base) + 4 * (1 + max(0, nbytes - len(base)) // 65533)
        nrand = max(16, nbytes - overhead - len(tag) - len(head))
        payload = tag + head + rng.randbytes(nrand)
        at = _jpeg_insert_point(base)
        return base[:at] + _jpeg_com_segments(payload) + base[at:]
    # PNG: IEND chunk is the last 12 bytes.
    nrand = max(16, nbytes - len(base) - 12 - len(tag))
    payload = tag + rng.randbytes(nrand)
    assert base[-12:-8] == b"\x00\x00\x00\x00" and base[-8:-4] == b"IEND"
    return base[:-12] + _png_chunk(b"paDd", payload) + base[-12:]


# ----------------------------------------------------------------------------------------------------------
# Tar
# ----------------------------------------------------------------------------------------------------------


def write_tar(
    path: Path | str,
    members: Iterable[tuple[str | tarfile.TarInfo, bytes | None]],
    *,
    format: int = tarfile.GNU_FORMAT,
) -> None:
    """Write a plain uncompressed tar with fixed metadata (mtime/uid/gid/names/mode), members in order.

    Each member is ``(name, data)``; for hand-built oddities pass a ready ``tarfile.TarInfo`` instead of
    the name (its fields are kept; ``size`` is set from ``data`` when data is not None; use ``None`` for
    links/directories).  Names are written verbatim (absolute names, ``..`` and long names included).
    """
    with open(path, "wb", buffering=1 << 20) as fh, tarfile.open(fileobj=fh, mode="w", format=format) as tf:
        for name, data in members:
            if isinstance(name, tarfile.TarInfo):
                ti = name
            else:
                ti = tarfile.TarInfo(name)
                ti.mtime = TAR_MTIME
                ti.uid, ti.gid = TAR_UID, TAR_GID
                ti.uname, ti.gname = TAR_UNAME, TAR_GNAME
                ti.mode = TAR_MODE
            if data is None:
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))


# ----------------------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------------------

_SUBJECTS = (
    "a cat", "a fluffy orange cat", "an astronaut", "a red fox", "a lighthouse", "an old sailing ship",
    "a robot", "two children", "a samurai", "a dragon", "a bowl of ramen", "a vintage car", "a hummingbird",
    "an elderly man", "a woman in a yellow raincoat", "a castle", "a tiny mouse", "a koi fish",
    "a steaming cup of coffee", "a wizard", "a golden retriever", "a neon sign reading \"OPEN\"",
    "a piñata", "a plate of crème brûlée", "the Zürich skyline", "a naïve painting of a cow",
    "a café terrace", "an über-modern villa", "a 日本語 sign", "a street in 東京", "a bouquet 🌸",
    "a sleepy 🐱", "a rocket 🚀", "a sparkling crystal ✨", "Ünïcödé letters", "a caterpillar's house",
)
_ACTIONS = (
    "sitting on", "floating above", "walking through", "standing next to", "hiding behind", "reading a book in",
    "dancing in", "looking at", "flying over", "sleeping under", "painting", "exploring",
)
_PLACES = (
    "a misty forest", "a crowded market", "the surface of Mars", "a snowy mountain", "an underwater city",
    "a sunlit kitchen", "a rainy street at night", "a field of sunflowers", "a futuristic city",
    "a quiet library", "a desert oasis", "a cozy living room", "an ancient temple", "a frozen lake",
)
_STYLES = (
    "digital art", "oil painting", "watercolor", "photorealistic", "3D render", "pixel art", "anime style",
    "studio lighting", "cinematic, 35mm", "isometric illustration", "charcoal sketch", "low poly",
)
_LONG_SENTENCES = (
    "The image shows {s} {a} {p}.",
    "In the foreground, {s} is rendered in soft, muted tones.",
    "The background features {p}, slightly out of focus.",
    "Warm light falls from the left, casting long shadows across the scene.",
    "The overall mood is calm and a little mysterious.",
    "Small details, like scattered leaves and drops of water, add texture.",
    "The colour palette is dominated by blues, teals and a touch of orange.",
    "There is no visible text in the image.",
    "The composition follows the rule of thirds, with {s} placed off-centre.",
    "It looks like {st}, with crisp edges and smooth gradients.",
    "A sign in the corner reads \"Bienvenue\", written in a playful font.",
    "Everything is framed by {p}, giving a sense of depth.",
)

# Whitespace inserted between words in "dirty" caption variants; str.split() treats all of them as blanks.
_GAP_VARIANTS = ("\n", "\r\n", "\t", "  ", "   ", " \n ", "\n\n", "\xa0", "\u3000")
_EDGE_VARIANTS = (" ", "  ", "\n", "\t", " \n", "\r\n", "\xa0")
_BLANK_STRINGS = ("", " ", "  \n ", "\t", "\n\n", " \r\n ", "\xa0", "\u3000 ")

_SUBREDDITS = ("dalle2", "dalle3", "ChatGPT", "bing", "weirddalle", "aiArt", "DALLE3Art", "laion_share_dalle3")
_OTHER_SOURCES = ("midjourney", "StableDiffusion", "aiArt", "sdxl", "laion_share_midjourney")

_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int) -> str:
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_B36[r])
    return "".join(out) or "0"


def _short_caption(rng: random.Random) -> str:
    parts = [rng.choice(_SUBJECTS), rng.choice(_ACTIONS), rng.choice(_PLACES)]
    if rng.random() < 0.6:
        parts[-1] += ","
        parts.append(rng.choice(_STYLES))
    return " ".join(parts)


def _long_caption(rng: random.Random) -> str:
    fill = {"s": rng.choice(_SUBJECTS), "a": rng.choice(_ACTIONS), "p": rng.choice(_PLACES), "st": rng.choice(_STYLES)}
    first = _LONG_SENTENCES[0].format(**fill)
    rest = rng.sample(_LONG_SENTENCES[1:], rng.randint(2, 6))
    return " ".join([first] + [s.format(**fill) for s in rest])


def _dirty(clean: str, rng: random.Random) -> str:
    """A whitespace-mangled version of ``clean`` with clean_caption(result) == clean; always differs."""
    words = clean.split(" ")
    out = [words[0]]
    changed = False
    for w in words[1:]:
        if rng.random() < 0.15:
            out.append(rng.choice(_GAP_VARIANTS))
            changed = True
        else:
            out.append(" ")
        out.append(w)
    text = "".join(out)
    if not changed or rng.random() < 0.5:
        text = rng.choice(_EDGE_VARIANTS) + text
    if rng.random() < 0.5:
        text = text + rng.choice(_EDGE_VARIANTS)
    return text


def _maybe_dirty(clean: str, rng: random.Random, p: float = 0.2) -> str:
    return _dirty(clean, rng) if rng.random() < p else clean


def _blank_str(rng: random.Random) -> str:
    return rng.choice(_BLANK_STRINGS)


def _blank_list(rng: random.Random) -> list[str]:
    return [_blank_str(rng) for _ in range(rng.randint(0, 3))]


# ----------------------------------------------------------------------------------------------------------
# Samples and shards
# ----------------------------------------------------------------------------------------------------------


def _exact_count(n: int, ratio: float, rng: random.Random) -> int:
    """ratio * n rounded stochastically (exact in expectation, deterministic per rng)."""
    x = ratio * n
    k = int(x)
    if rng.random() < x - k:
        k += 1
    return min(k, n)


def _caption_fields(kind: str, level: int, truth: str | None, rng: random.Random) -> dict[str, object]:
    """Build the five caption fields; ``MISSING`` entries are dropped by the caller.

    kind "normal": short_caption carries the truth.  kind "fallback": fields before CAPTION_FIELDS[level]
    are missing/blank, that field carries the truth.  kind "none": every caption field is missing/blank.
    """
    fields: dict[str, object] = {}
    for i, name in enumerate(CAPTION_FIELDS):
        is_list = name.endswith("2")
        if kind == "none" or (kind == "fallback" and i < level):
            # unusable: missing, empty or whitespace-only (lists: missing, [] or only blank strings)
            r = rng.random()
            if r < 0.3:
                fields[name] = _MISSING
            elif is_list:
                fields[name] = _blank_list(rng)
            else:
                fields[name] = "" if r < 0.55 else _blank_str(rng)
        elif (kind == "normal" and i == 0) or (kind == "fallback" and i == level):
            assert truth is not None
            if is_list:
                lst = _blank_list(rng)
                if not lst:
                    lst = [_blank_str(rng)]  # make sure readers really skip blank entries
                lst.append(_maybe_dirty(truth, rng, 0.3))
                if rng.random() < 0.5:
                    lst.append(_short_caption(rng))
                fields[name] = lst
            else:
                fields[name] = _maybe_dirty(truth, rng, 0.3 if kind == "fallback" else 0.15)
        else:
            # after the field that gives the caption: anything realistic (it must not be used)
            if name == "long_caption":
                fields[name] = _maybe_dirty(_long_caption(rng), rng, 0.3) if rng.random() < 0.97 else ""
            elif name == "short_caption":
                fields[name] = _short_caption(rng)
            elif name == "original_prompt":
                fields[name] = _maybe_dirty(_short_caption(rng), rng, 0.1) if rng.random() < 0.6 else _MISSING
            else:
                if rng.random() < 0.7:
                    gen = _short_caption if name == "short_caption2" else _long_caption
                    fields[name] = [_maybe_dirty(gen(rng), rng, 0.1) for _ in range(rng.randint(1, 2))]
                else:
                    fields[name] = _MISSING
    return fields


_MISSING = object()


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
    n = spec.per_shard
    stem = shard_name(shard_index)

    # Exact per-shard counts at random positions (so small corpora still contain every case).
    order = list(range(n))
    rng.shuffle(order)
    n_none = _exact_count(n, spec.no_caption_ratio, rng)
    n_fb = min(n - n_none, _exact_count(n, spec.fallback_ratio, rng))
    kind = ["normal"] * n
    level = [0] * n
    fb_offset = rng.randrange(4)
    for j, pos in enumerate(order[:n_none]):
        kind[pos] = "none"
    for j, pos in enumerate(order[n_none : n_none + n_fb]):
        kind[pos] = "fallback"
        level[pos] = 1 + (j + fb_offset) % 4  # cycle long_caption, short_caption2, long_caption2, original_prompt
    missing_size = [False] * n
    for pos in rng.sample(range(n), _exact_count(n, spec.missing_size_ratio, rng)):
        missing_size[pos] = True

    base_index = spec.start_index + shard_index * n
    for i in range(n):
        gidx = base_index + i
        key = f"{gidx:06d}"
        if rng.random() < 0.03:
            key += rng.choice((".v2", ".alt", ".1", ".orig", ".upscaled.2x"))
        ext = rng.choices(_EXT_CHOICES, _EXT_WEIGHTS)[0]
        fmt = _FORMAT_OF_EXT[ext]
        width, height = rng.choices(_SIZE_CHOICES, _SIZE_WEIGHTS)[0]
        progressive = fmt == "jpeg" and rng.random() < 0.15
        decoy = fmt == "jpeg" and rng.random() < 0.25
        base, pil_md5 = _base_image(fmt, width, height, progressive)
        img = _pad_image(
            fmt, base, spec.image_bytes, rng, decoy=decoy, tag=f"{stem}/{key}:".encode(), width=width, height=height
        )
        image_member = f"{key}.{ext}"
        json_member = f"{key}.json"

        if (width, height) in _DALLE_SIZES:
            source = rng.choice(_SUBREDDITS) if rng.random() < 0.9 else None
        else:
            source = rng.choice(_OTHER_SOURCES) if rng.random() < 0.9 else None

        k = kind[i]
        truth: str | None
        if k == "none":
            truth = None
        elif k == "fallback" and level[i] == 1:
            truth = _long_caption(rng)
        else:
            truth = _short_caption(rng)
        caps = _caption_fields(k, level[i], truth, rng)

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
        if missing_size[i]:
            del doc["width"], doc["height"], doc["resolution"]
        jbytes = orjson.dumps({k2: v for k2, v in doc.items() if v is not _MISSING})

        json_first = rng.random() < spec.json_first_ratio
        rows.append(
            TruthRow(
                shard=stem,
                key=key,
                image_member=image_member,
                json_member=json_member,
                width=width,
                height=height,
                caption=truth,
                source=source,
                json_has_size=not missing_size[i],
            )
        )
        if json_first:
            yield json_member, jbytes
            yield image_member, img
        else:
            yield image_member, img
            yield json_member, jbytes


def _files_equal(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(1 << 20)
            if x != fb.read(1 << 20):
                return False
            if not x:
                return True


def write_shard(path: Path | str, spec: SynthSpec, shard_index: int) -> list[TruthRow]:
    """Write one shard (``spec.per_shard`` samples, numbered from ``start_index + shard_index * per_shard``).

    The file is written to a hidden temporary name then renamed; if ``path`` already holds identical bytes
    it is left untouched (mtime kept).  Returns the truth rows in member order.
    """
    path = Path(path)
    rows: list[TruthRow] = []
    tmp = path.with_name(f".{path.name}.partial")
    try:
        write_tar(tmp, _shard_samples(spec, shard_index, rows))
        if path.exists() and _files_equal(tmp, path):
            Root(path.parent).unlink(tmp)
        else:
            Root(path.parent).replace(tmp, path)
    finally:
        Root(path.parent).unlink(tmp)
    return rows


def write_truth(path: Path | str, rows: Sequence[TruthRow]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as fh:
        for r in rows:
            fh.write(orjson.dumps(r))
            fh.write(b"\n")
    Root(path.parent).replace(tmp, path)


def read_truth(path: Path | str) -> list[TruthRow]:
    rows = []
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                rows.append(TruthRow(**orjson.loads(line)))
    return rows


def write_corpus(out_dir: Path | str, spec: SynthSpec) -> list[TruthRow]:
    """Write ``out_dir/data-NNNNNN.tar`` for shards ``first_shard .. first_shard + shards - 1`` and
    ``out_dir/truth.jsonl``; return the truth rows (shard then member order).

    In a fresh directory the rows are exactly those of the shards written.  If ``truth.jsonl`` already
    exists (growing a corpus), its rows for other shards whose tar still exists are kept, so truth.jsonl
    (and the return value) always describes every synthetic shard present in ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    new_rows: list[TruthRow] = []
    written: set[str] = set()
    for s in range(spec.first_shard, spec.first_shard + spec.shards):
        stem = shard_name(s)
        new_rows += write_shard(out_dir / f"{stem}.tar", spec, s)
        written.add(stem)
    truth_path = out_dir / "truth.jsonl"
    rows = new_rows
    if truth_path.exists():
        kept = [r for r in read_truth(truth_path) if r.shard not in written and (out_dir / f"{r.shard}.tar").exists()]
        if kept:
            by_shard: dict[str, list[TruthRow]] = {}
            for r in kept + new_rows:
                by_shard.setdefault(r.shard, []).append(r)
            rows = [r for stem in sorted(by_shard) for r in by_shard[stem]]
    write_truth(truth_path, rows)
    return rows


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    d = SynthSpec()
    p = argparse.ArgumentParser(
        prog="python -m dalle3_etl.devtools.synth",
        description="Write a synthetic DALLE-3-style corpus (data-NNNNNN.tar shards + truth.jsonl).",
    )
    p.add_argument("out", metavar="OUT", type=Path, help="output directory")
    p.add_argument("--shards", type=int, default=d.shards)
    p.add_argument("--per-shard", type=int, default=d.per_shard)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--image-bytes", type=int, default=d.image_bytes, help="approximate size of each image")
    p.add_argument("--missing-size-ratio", type=float, default=d.missing_size_ratio)
    p.add_argument("--no-caption-ratio", type=float, default=d.no_caption_ratio)
    p.add_argument("--fallback-ratio", type=float, default=d.fallback_ratio)
    p.add_argument("--json-first-ratio", type=float, default=d.json_first_ratio)
    p.add_argument("--start-index", type=int, default=d.start_index)
    p.add_argument("--first-shard", type=int, default=d.first_shard)
    p.add_argument("-q", "--quiet", action="store_true")
    a = p.parse_args(argv)
    try:
        spec = SynthSpec(
            shards=a.shards,
            per_shard=a.per_shard,
            seed=a.seed,
            image_bytes=a.image_bytes,
            missing_size_ratio=a.missing_size_ratio,
            no_caption_ratio=a.no_caption_ratio,
            fallback_ratio=a.fallback_ratio,
            json_first_ratio=a.json_first_ratio,
            start_index=a.start_index,
            first_shard=a.first_shard,
        )
    except ValueError as e:
        p.error(str(e))
    t0 = time.perf_counter()
    rows = write_corpus(a.out, spec)
    dt = time.perf_counter() - t0
    if not a.quiet:
        n = spec.shards * spec.per_shard
        rejected = sum(r.caption is None for r in rows)
        print(
            f"wrote {n} samples in {spec.shards} shard(s) to {a.out} in {dt:.2f} s "
            f"({n / dt if dt > 0 else 0:.0f} samples/s); truth.jsonl: {len(rows)} rows, "
            f"{rejected} without caption"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
