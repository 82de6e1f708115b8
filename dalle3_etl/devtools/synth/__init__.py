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

The command line is ``dalle3-etl synth``. Modules: ``spec`` (SynthSpec, truth rows, truth.jsonl), ``samples``
(one shard's samples), ``images``, ``captions``, ``tarwrite`` and ``corpus`` (writing shards and corpora), ``img2dataset`` (an img2dataset-style WebDataset corpus).
"""

from __future__ import annotations

from dalle3_etl.devtools.synth.captions import CAPTION_FIELDS, clean_caption
from dalle3_etl.devtools.synth.corpus import write_corpus, write_shard
from dalle3_etl.devtools.synth.images import make_image
from dalle3_etl.devtools.synth.img2dataset import write_img2dataset_corpus
from dalle3_etl.devtools.synth.spec import SpecError, SynthSpec, TruthRow, read_truth, shard_name, write_truth
from dalle3_etl.devtools.synth.tarwrite import TAR_GID, TAR_GNAME, TAR_MODE, TAR_MTIME, TAR_UID, TAR_UNAME, write_tar

__all__ = [
    "SynthSpec",
    "SpecError",
    "TruthRow",
    "CAPTION_FIELDS",
    "clean_caption",
    "make_image",
    "write_tar",
    "write_shard",
    "write_corpus",
    "write_img2dataset_corpus",
    "read_truth",
    "write_truth",
    "shard_name",
    "TAR_MTIME",
    "TAR_UID",
    "TAR_GID",
    "TAR_UNAME",
    "TAR_GNAME",
    "TAR_MODE",
]
