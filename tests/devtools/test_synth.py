"""Tests for the synthetic corpus generator (dalle3_etl.devtools.synth)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import struct
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools import synth
from dalle3_etl.devtools.synth import SynthSpec, TruthRow, make_image, read_truth, write_corpus, write_shard, write_tar
from dalle3_etl.devtools.synth.captions import _dirty

REPO = Path(__file__).resolve().parents[2]

STR_FIELDS = {
    "image_name",
    "md5_pil_hash",
    "md5_file_hash",
    "sha512_hash",
    "short_caption",
    "long_caption",
    "resolution",
    "url",
    "source",
    "original_prompt",
}
LIST_FIELDS = {"short_caption2", "long_caption2"}
INT_FIELDS = {"width", "height"}
ALL_FIELDS = STR_FIELDS | LIST_FIELDS | INT_FIELDS
ALWAYS = {"image_name", "md5_pil_hash", "md5_file_hash", "sha512_hash", "url"}
CHAIN = ("short_caption", "long_caption", "short_caption2", "long_caption2", "original_prompt")

# A corpus with raised ratios so every case shows up in a few hundred samples.
RICH = SynthSpec(
    shards=2,
    per_shard=200,
    seed=7,
    image_bytes=3000,
    missing_size_ratio=0.1,
    no_caption_ratio=0.05,
    fallback_ratio=0.2,
    json_first_ratio=0.5,
)


# ---------------------------------------------------------------------------------------------------------
# helpers (independent re-implementations: do not use the module's own logic)
# ---------------------------------------------------------------------------------------------------------


def expected_caption(doc: dict) -> str | None:
    for field in CHAIN:
        v = doc.get(field)
        values = v if isinstance(v, list) else [v]
        for x in values:
            if isinstance(x, str):
                c = " ".join(x.split())
                if c:
                    return c
    return None


def read_members(tar_path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    out = []
    with tarfile.open(tar_path, "r:") as tf:
        for m in tf:
            out.append((m, tf.extractfile(m).read() if m.isfile() else None))
    return out


def load_corpus(out: Path) -> tuple[list[TruthRow], dict[tuple[str, str], dict]]:
    """Truth rows + per (shard, key): image bytes, json doc, raw json, member order info."""
    rows = read_truth(out / "truth.jsonl")
    samples: dict[tuple[str, str], dict] = {}
    for tar_path in sorted(out.glob("data-*.tar")):
        stem = tar_path.stem
        for pos, (m, data) in enumerate(read_members(tar_path)):
            key, ext = m.name.rsplit(".", 1)
            s = samples.setdefault((stem, key), {"order": []})
            s["order"].append((pos, ext))
            if ext == "json":
                s["raw"] = data
                s["doc"] = orjson.loads(data)
                s["json_member"] = m.name
            else:
                s["image"] = data
                s["image_member"] = m.name
    return rows, samples


def jpeg_segments(data: bytes) -> list[tuple[int, int]]:
    """(marker, offset) of each segment up to SOS, walking lengths."""
    assert data[:2] == b"\xff\xd8"
    pos, segs = 2, []
    while True:
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        segs.append((marker, pos))
        if marker == 0xDA:
            return segs
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    out = tmp_path_factory.mktemp("rich")
    returned = write_corpus(out, RICH)
    rows, samples = load_corpus(out)
    return out, returned, rows, samples


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    out = tmp_path_factory.mktemp("default")
    returned = write_corpus(out, SynthSpec())
    rows, samples = load_corpus(out)
    return out, returned, rows, samples


# ---------------------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------------------


def test_same_spec_same_bytes_different_seed_differs(tmp_path):
    spec = SynthSpec(shards=1, per_shard=40, image_bytes=2000)
    a = tmp_path / "a.tar"
    b = tmp_path / "b.tar"
    c = tmp_path / "c.tar"
    ra = write_shard(a, spec, 0)
    rb = write_shard(b, spec, 0)
    rc = write_shard(c, SynthSpec(shards=1, per_shard=40, image_bytes=2000, seed=1), 0)
    assert a.read_bytes() == b.read_bytes()
    assert ra == rb
    assert a.read_bytes() != c.read_bytes()
    assert [r.caption for r in ra] != [r.caption for r in rc]


def test_corpus_deterministic_and_shards_stable_when_growing(tmp_path):
    spec = SynthSpec(shards=2, per_shard=30, image_bytes=1500)
    r1 = write_corpus(tmp_path / "x", spec)
    r2 = write_corpus(tmp_path / "y", spec)
    assert r1 == r2
    for name in ("data-000000.tar", "data-000001.tar", "truth.jsonl"):
        assert (tmp_path / "x" / name).read_bytes() == (tmp_path / "y" / name).read_bytes()
    # shard k does not depend on how many shards are written
    write_corpus(tmp_path / "z", SynthSpec(shards=3, per_shard=30, image_bytes=1500))
    for name in ("data-000000.tar", "data-000001.tar"):
        assert (tmp_path / "x" / name).read_bytes() == (tmp_path / "z" / name).read_bytes()


def test_rewrite_identical_keeps_file_and_growing_keeps_truth(tmp_path):
    spec = SynthSpec(shards=1, per_shard=20, image_bytes=1000)
    first = write_corpus(tmp_path, spec)
    shard0 = tmp_path / "data-000000.tar"
    os.utime(shard0, ns=(1_000_000_000, 1_000_000_000))
    # same shard again: untouched
    write_corpus(tmp_path, spec)
    assert shard0.stat().st_mtime_ns == 1_000_000_000
    # grow with first_shard: old truth kept, shard 0 untouched, new shard numbered after
    rows = write_corpus(tmp_path, SynthSpec(shards=2, per_shard=20, image_bytes=1000, first_shard=1))
    assert shard0.stat().st_mtime_ns == 1_000_000_000
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["data-000000.tar", "data-000001.tar", "data-000002.tar"]
    assert rows[:20] == first
    assert [r.shard for r in rows] == ["data-000000"] * 20 + ["data-000001"] * 20 + ["data-000002"] * 20
    assert read_truth(tmp_path / "truth.jsonl") == rows
    assert rows[20].key == "000020" or rows[20].key.startswith("000020.")
    # same corpus as writing 3 shards at once
    all3 = write_corpus(tmp_path / "all", SynthSpec(shards=3, per_shard=20, image_bytes=1000))
    assert all3 == rows
    for name in ("data-000001.tar", "data-000002.tar"):
        assert (tmp_path / name).read_bytes() == (tmp_path / "all" / name).read_bytes()
    # no temporary files left behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_start_index(tmp_path):
    rows = write_corpus(tmp_path, SynthSpec(shards=2, per_shard=5, image_bytes=500, start_index=1000))
    assert [r.key.split(".")[0] for r in rows] == [f"{i:06d}" for i in range(1000, 1010)]


# ---------------------------------------------------------------------------------------------------------
# tar layout
# ---------------------------------------------------------------------------------------------------------


def test_tar_layout(rich):
    out, returned, rows, samples = rich
    tars = sorted(p.name for p in out.glob("*.tar"))
    assert tars == ["data-000000.tar", "data-000001.tar"]
    assert returned == rows
    assert len(rows) == RICH.shards * RICH.per_shard
    for tar_path in out.glob("*.tar"):
        raw = tar_path.read_bytes()
        assert raw[257:265] == b"ustar  \x00"  # GNU format magic
        members = read_members(tar_path)
        assert len(members) == 2 * RICH.per_shard
        for m, _ in members:
            assert m.isfile() and m.mtime == synth.TAR_MTIME and m.uid == synth.TAR_UID and m.uname == synth.TAR_UNAME
        # samples are adjacent pairs; truth order == tar order
        names = [m.name for m, _ in members]
        shard_rows = [r for r in rows if r.shard == tar_path.stem]
        for i, r in enumerate(shard_rows):
            assert {names[2 * i], names[2 * i + 1]} == {r.image_member, r.json_member}
    for r in rows:
        assert r.image_member.rsplit(".", 1)[0] == r.key and r.json_member == r.key + ".json"
        assert r.key[:6].isdigit()
        assert r.image_member.rsplit(".", 1)[1] in ("jpg", "jpeg", "png")


def test_keys_with_dots_and_json_order_both_present(rich):
    _, _, rows, samples = rich
    assert sum("." in r.key for r in rows) >= 3
    firsts = Counter(s["order"][0][1] == "json" for s in samples.values())
    assert firsts[True] > 0 and firsts[False] > 0
    assert 0.35 < firsts[True] / len(samples) < 0.65
    # keys are unique across the corpus
    assert len({r.key for r in rows}) == len(rows)


def test_json_first_ratio_extremes(tmp_path):
    for ratio, want in ((1.0, "json"), (0.0, "jpg")):
        p = tmp_path / f"{ratio}.tar"
        rows = write_shard(p, SynthSpec(per_shard=10, image_bytes=500, json_first_ratio=ratio), 0)
        names = [m.name for m, _ in read_members(p)]
        for i, r in enumerate(rows):
            first = names[2 * i]
            assert (first == r.json_member) == (want == "json")


# ---------------------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------------------


def test_images_open_at_truth_size(rich, default):
    for _, _, rows, samples in (rich, default):
        digests = set()
        for r in rows:
            data = samples[(r.shard, r.key)]["image"]
            digests.add(hashlib.md5(data).digest())
            with Image.open(io.BytesIO(data)) as im:
                assert im.size == (r.width, r.height)
                assert im.format == ("PNG" if r.image_member.endswith(".png") else "JPEG")
        assert len(digests) == len(rows), "image bytes must be unique per sample"


def test_images_fully_decode_and_png_crc_valid(rich):
    _, _, rows, samples = rich
    seen = set()
    for r in rows:
        ext = r.image_member.rsplit(".", 1)[1]
        if (ext, r.width, r.height) in seen:
            continue
        seen.add((ext, r.width, r.height))
        data = samples[(r.shard, r.key)]["image"]
        if ext == "png":
            with Image.open(io.BytesIO(data)) as im:
                im.verify()  # checks chunk CRCs
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            assert im.size == (r.width, r.height)


def test_image_sizes_distribution_and_byte_size(default):
    _, _, rows, samples = default
    sizes = Counter((r.width, r.height) for r in rows)
    assert sizes.most_common(1)[0][0] == (1024, 1024)
    assert {(1792, 1024), (1024, 1792)} <= set(sizes)
    assert set(sizes) - {(1024, 1024), (1792, 1024), (1024, 1792)}, "other-source sizes expected"
    lens = sorted(len(samples[(r.shard, r.key)]["image"]) for r in rows)
    median = lens[len(lens) // 2]
    assert 0.95 * 24_000 <= median <= 1.05 * 24_000
    exts = Counter(r.image_member.rsplit(".", 1)[1] for r in rows)
    assert exts["jpg"] > exts["png"] > exts["jpeg"] > 0


def test_jpeg_padding_before_sof_and_decoys(rich):
    _, _, rows, samples = rich
    decoys = progressive = 0
    for r in rows:
        if r.image_member.endswith(".png"):
            data = samples[(r.shard, r.key)]["image"]
            assert b"paDd" in data and data.index(b"paDd") < data.index(b"IEND")
            continue
        data = samples[(r.shard, r.key)]["image"]
        segs = jpeg_segments(data)
        markers = [m for m, _ in segs]
        sof = next(i for i, m in enumerate(markers) if m in (0xC0, 0xC2))
        assert 0xFE in markers[:sof], "COM padding must precede SOF"
        sof_off = segs[sof][1]
        h, w = struct.unpack(">HH", data[sof_off + 5 : sof_off + 9])
        assert (w, h) == (r.width, r.height)
        progressive += markers[sof] == 0xC2
        if data.find(b"\xff\xc0") < sof_off:
            decoys += 1
    assert decoys > 0 and progressive > 0


# ---------------------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------------------


def test_json_fields_and_types(rich):
    _, _, rows, samples = rich
    differing_name = non_ascii = 0
    present = Counter()
    for r in rows:
        s = samples[(r.shard, r.key)]
        doc, img = s["doc"], s["image"]
        assert set(doc) <= ALL_FIELDS
        assert ALWAYS <= set(doc)
        present.update(doc.keys())
        for k, v in doc.items():
            if k in STR_FIELDS:
                assert isinstance(v, str), k
            elif k in LIST_FIELDS:
                assert isinstance(v, list) and all(isinstance(x, str) for x in v), k
            else:
                assert type(v) is int, k
        assert doc["md5_file_hash"] == hashlib.md5(img).hexdigest()
        assert doc["sha512_hash"] == hashlib.sha512(img).hexdigest()
        assert len(doc["md5_pil_hash"]) == 32
        has = {"width", "height", "resolution"} & set(doc)
        assert has in (set(), {"width", "height", "resolution"})
        assert r.json_has_size == bool(has)
        if has:
            assert (doc["width"], doc["height"]) == (r.width, r.height)
            assert doc["resolution"] == f"{r.width}x{r.height}"
        assert r.source == doc.get("source")
        differing_name += doc["image_name"] != r.image_member
        non_ascii += any(b >= 0x80 for b in s["raw"])
    assert 0 < differing_name < 0.2 * len(rows)
    assert non_ascii > 0
    # optional ("if available") fields are sometimes missing
    for f in ("source", "original_prompt", "short_caption2", "long_caption2"):
        assert 0 < present[f] < len(rows), f
    assert any(v == "laion_share_dalle3" for v in (r.source for r in rows))


# ---------------------------------------------------------------------------------------------------------
# captions
# ---------------------------------------------------------------------------------------------------------


def test_truth_caption_follows_rule(rich, default):
    for _, _, rows, samples in (rich, default):
        for r in rows:
            doc = samples[(r.shard, r.key)]["doc"]
            assert r.caption == expected_caption(doc), (r, doc)
            if r.caption is not None:
                assert r.caption == " ".join(r.caption.split()) and r.caption


def test_caption_cases_present(rich):
    _, _, rows, samples = rich
    from_field = Counter()
    dirty = newline = blank_list_prefix = 0
    short_forms = Counter()
    for r in rows:
        doc = samples[(r.shard, r.key)]["doc"]
        sc = doc.get("short_caption")
        short_forms["missing" if sc is None else "empty" if sc == "" else "blank" if not sc.strip() else "ok"] += 1
        if r.caption is None:
            continue
        for f in CHAIN:
            v = doc.get(f)
            vals = v if isinstance(v, list) else [v]
            hit = [x for x in vals if isinstance(x, str) and " ".join(x.split())]
            if hit:
                from_field[f] += 1
                raw = hit[0]
                dirty += raw != r.caption
                newline += "\n" in raw
                if isinstance(v, list) and v.index(raw) > 0:
                    blank_list_prefix += 1
                break
    assert set(from_field) == set(CHAIN)
    assert dirty > 10 and newline > 5 and blank_list_prefix > 0
    assert short_forms["missing"] and short_forms["empty"] and short_forms["blank"]


def test_ratios_roughly_honoured(rich, default):
    for spec, (_, _, rows, samples) in ((RICH, rich), (SynthSpec(), default)):
        n = len(rows)
        none = sum(r.caption is None for r in rows)
        nosize = sum(not r.json_has_size for r in rows)
        fb = sum(
            r.caption is not None
            and not " ".join(str(samples[(r.shard, r.key)]["doc"].get("short_caption", "")).split())
            for r in rows
        )
        # per-shard counts are exact up to stochastic rounding
        assert abs(none - spec.no_caption_ratio * n) <= spec.shards
        assert abs(nosize - spec.missing_size_ratio * n) <= spec.shards
        assert abs(fb - spec.fallback_ratio * n) <= spec.shards
        assert none > 0 and nosize > 0 and fb > 0


def test_zero_ratios(tmp_path):
    rows = write_corpus(
        tmp_path,
        SynthSpec(shards=1, per_shard=50, image_bytes=500, missing_size_ratio=0, no_caption_ratio=0, fallback_ratio=0),
    )
    _, samples = load_corpus(tmp_path)
    assert all(r.caption is not None and r.json_has_size for r in rows)
    for r in rows:
        assert " ".join(samples[(r.shard, r.key)]["doc"]["short_caption"].split()) == r.caption


@settings(max_examples=60, deadline=None)
@given(
    words=st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs")), min_size=1, max_size=6),
        min_size=1,
        max_size=12,
    ),
    seed=st.integers(0, 2**32),
)
def test_dirty_cleans_back(words, seed):
    import random

    clean = " ".join(words)
    if clean != " ".join(clean.split()):
        return  # a "word" containing other whitespace-like characters; not what the generator produces
    d = _dirty(clean, random.Random(seed))
    assert d != clean and synth.clean_caption(d) == clean


# ---------------------------------------------------------------------------------------------------------
# truth file, helpers, CLI
# ---------------------------------------------------------------------------------------------------------


def test_truth_roundtrip(rich):
    out, returned, rows, _ = rich
    assert read_truth(out / "truth.jsonl") == returned
    lines = (out / "truth.jsonl").read_bytes().splitlines()
    assert len(lines) == len(returned)
    assert orjson.loads(lines[0]).keys() == {f.name for f in dataclasses.fields(TruthRow)}
    assert any(r.caption is None for r in returned)


def test_make_image_helper():
    import random

    rng = random.Random(1)
    for fmt in ("jpg", "jpeg", "JPEG", "png"):
        for w, h in ((64, 48), (1024, 1792)):
            for nbytes in (0, 5000, 150_000):
                a = make_image(fmt, w, h, nbytes, rng)
                b = make_image(fmt, w, h, nbytes, rng)
                assert a != b
                with Image.open(io.BytesIO(a)) as im:
                    assert im.size == (w, h)
                    im.load()
                if nbytes > 20_000:
                    assert abs(len(a) - nbytes) < 100
    d = make_image("jpg", 300, 200, 4000, rng, decoy=True, progressive=True)
    with Image.open(io.BytesIO(d)) as im:
        assert im.size == (300, 200)
    with pytest.raises(ValueError):
        make_image("gif", 10, 10, 0, rng)


def test_write_tar_helper(tmp_path):
    p = tmp_path / "bad.tar"
    link = tarfile.TarInfo("link.jpg")
    link.type = tarfile.SYMTYPE
    link.linkname = "../../etc/passwd"
    long = "d/" * 80 + "x.json"
    write_tar(p, [("a.json", b"{}"), ("a.jpg", b"\xff\xd8"), (link, None), (long, b"[]")])
    members = read_members(p)
    assert [m.name for m, _ in members] == ["a.json", "a.jpg", "link.jpg", long]
    assert members[0][1] == b"{}" and members[2][0].issym()
    assert members[0][0].mtime == synth.TAR_MTIME


def test_spec_validation():
    with pytest.raises(ValueError):
        SynthSpec(no_caption_ratio=1.5)
    with pytest.raises(ValueError):
        SynthSpec(no_caption_ratio=0.6, fallback_ratio=0.6)
    with pytest.raises(ValueError):
        SynthSpec(shards=-1)


def test_cli_subprocess(tmp_path):
    out = tmp_path / "cli"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "dalle3_etl",
            "synth",
            str(out),
            "--shards",
            "2",
            "--per-shard",
            "7",
            "--seed",
            "3",
            "--image-bytes",
            "1000",
            "--fallback-ratio",
            "0.3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "14 samples" in res.stdout
    assert sorted(p.name for p in out.iterdir()) == ["data-000000.tar", "data-000001.tar", "truth.jsonl"]
    rows = read_truth(out / "truth.jsonl")
    assert rows == write_corpus(
        tmp_path / "api", SynthSpec(shards=2, per_shard=7, seed=3, image_bytes=1000, fallback_ratio=0.3)
    )
    assert (out / "data-000001.tar").read_bytes() == (tmp_path / "api" / "data-000001.tar").read_bytes()


def test_cli_rejects_bad_args(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["synth", str(tmp_path), "--no-caption-ratio", "2"])
    assert bad.exit_code == 2
    quiet = runner.invoke(app, ["synth", str(tmp_path / "q"), "--shards", "1", "--per-shard", "3", "-q"])
    assert quiet.exit_code == 0
    assert bad.stdout + quiet.stdout == ""
