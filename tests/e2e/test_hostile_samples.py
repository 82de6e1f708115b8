"""Hostile samples: one sample's trouble rejects that sample with a clear reason and never fails its shard;
a sample gets the same result from every source (.tar, .tar.gz, a non-seekable stream, a pipe); images that
are not images are rejected; captions lose control characters and invisible-only captions count as empty;
output names are never reused, also on a case-insensitive file system.

Shards are hand-made (badinput_helpers, synth.make_image, Pillow for the formats synth does not write)."""

from __future__ import annotations

import errno
import gzip
import io
import os
import random
import struct
import tracemalloc
import unicodedata
from pathlib import Path

import orjson
import pytest
from badinput_helpers import convert, img, js, outcome, source, tar_bytes, write_shards
from PIL import Image

from dalle3_etl.check.verify import verify
from dalle3_etl.devtools import synth
from dalle3_etl.run.pipeline import run_convert
from dalle3_etl.settings import Settings
from dalle3_etl.shard import convert as shard
from dalle3_etl.shard import imageheader, sinks, tarstream, writer
from dalle3_etl.shard.rows import Reason
from dalle3_etl.shard.rows import parse_json as real_parse_json
from dalle3_etl.shard.samples import IMAGE_EXTENSIONS, Pairing
from dalle3_etl.store.fsio import Root


def good(*keys: str) -> list:
    return [m for k in keys for m in ((f"{k}.jpg", img()), (f"{k}.json", js()))]


def nosize(**fields) -> bytes:
    return js(width=..., height=..., **fields)


# -- one sample's trouble never fails the shard -----------------------------------------------------------


@pytest.mark.parametrize("mode", ["file", "stream"])
def test_name_1500_folders_deep_is_rejected_and_the_shard_is_converted(tmp_path, mode):
    deep = "a/" * 1500 + "x"  # 3,001 bytes: a valid tar name; os.makedirs recursed past Python's limit
    members = good("first") + [(f"{deep}.jpg", img()), (f"{deep}.json", js())] + good("last")
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / "out", mode)
    assert res.result("s").ok and res.result("s").failure is None and res.summary.exit_code == 0
    assert res.filenames == ["s/first.jpg", "s/last.jpg"]
    line = res.reject(f"{deep}.jpg")
    assert line["reason"] == Reason.NAME_UNUSABLE and "1500 folders deep" in line["detail"]
    assert res.reasons(f"{deep}.json") == []
    assert not (tmp_path / "out/data/s/a").exists()
    again = convert([path], tmp_path / "out", mode)  # and every later run agrees
    assert again.rejects == res.rejects and again.filenames == res.filenames


def test_a_name_at_the_depth_limit_is_converted(tmp_path):
    name = "d/" * writer.MAX_FOLDER_DEPTH + "x"
    (path,) = write_shards(tmp_path / "in", {"s.tar": [(f"{name}.jpg", img()), (f"{name}.json", js())]})
    res = convert([path], tmp_path / "out")
    assert res.filenames == [f"s/{name}.jpg"] and res.rejects == []


def _raise_on(marker: bytes, exc: BaseException, real):
    def parse(data, settings):
        if marker in data:
            raise exc
        return real(data, settings)

    return parse


@pytest.mark.parametrize("mode", ["file", "stream"])
@pytest.mark.parametrize("json_first", [True, False], ids=["json-first", "image-first"])
def test_unexpected_error_reading_a_member_rejects_its_sample_only(tmp_path, monkeypatch, mode, json_first):
    monkeypatch.setattr(shard, "parse_json", _raise_on(b"boom", ValueError("boom went the parser"), real_parse_json))
    bad = [("bad.json", js(caption="boom")), ("bad.jpg", img())]
    members = good("a") + (bad if json_first else bad[::-1]) + good("z")
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / "out", mode)
    assert res.filenames == ["s/a.jpg", "s/z.jpg"]
    line = res.reject("bad.json")
    assert line["reason"] == Reason.SAMPLE_ERROR
    assert "ValueError: boom went the parser" in line["detail"] and "'bad.json'" in line["detail"]
    assert "test_hostile_samples.py" in line["detail"]  # where it was raised
    assert res.reasons("bad.jpg") == []  # one line for the sample: its image goes with it
    assert not list((tmp_path / "out/.dalle3-etl/staging").iterdir())
    assert res.result("s").ok and res.summary.exit_code == 0


@pytest.mark.parametrize("mode", ["file", "stream"])
def test_unexpected_error_writing_a_sample_leaves_nothing_of_it(tmp_path, monkeypatch, mode):
    real = sinks.FileTree.write_text

    def write_text(self, relpath, text):
        if relpath.endswith("/bad.txt"):
            raise RecursionError("maximum recursion depth exceeded")
        return real(self, relpath, text)

    monkeypatch.setattr(sinks.FileTree, "write_text", write_text)
    (path,) = write_shards(tmp_path / "in", {"s.tar": good("a", "bad", "z")})
    res = convert([path], tmp_path / "out", mode)
    assert res.filenames == ["s/a.jpg", "s/z.jpg"]
    line = res.reject("bad.jpg")
    assert line["reason"] == Reason.SAMPLE_ERROR and "RecursionError: maximum recursion depth" in line["detail"]
    assert "'bad.json'" in line["detail"]
    assert not (tmp_path / "out/data/s/bad.jpg").exists()  # the image written before the caption is removed
    assert res.reasons("bad.json") == [] and res.result("s").ok


def test_unexpected_error_pairing_a_member_rejects_it(tmp_path, monkeypatch):
    real = Pairing.add

    def add(self, key, role, member, payload, weight=0):
        if key == "p":
            raise KeyError("pairing broke")
        return real(self, key, role, member, payload, weight)

    monkeypatch.setattr(Pairing, "add", add)
    (path,) = write_shards(tmp_path / "in", {"s.tar": good("a", "p", "z")})
    res = convert([path], tmp_path / "out")
    assert res.filenames == ["s/a.jpg", "s/z.jpg"]
    for member in ("p.jpg", "p.json"):
        line = res.reject(member)
        assert line["reason"] == Reason.SAMPLE_ERROR and "KeyError: 'pairing broke'" in line["detail"]


@pytest.mark.parametrize(
    "exc, failure",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        (OSError(errno.EIO, "Input/output error"), "Input/output error"),
    ],
)
def test_disk_errors_still_fail_the_shard(tmp_path, monkeypatch, exc, failure):
    monkeypatch.setattr(shard, "parse_json", _raise_on(b"boom", exc, real_parse_json))
    (path,) = write_shards(tmp_path / "in", {"s.tar": good("a") + [("b.jpg", img()), ("b.json", js(caption="boom"))]})
    summary = run_convert([source(path)], tmp_path / "out", Settings(workers=1))
    (result,) = summary.results
    assert not result.ok and failure in result.failure and summary.exit_code == 1


def test_keyboard_interrupt_and_shard_damage_are_not_swallowed(tmp_path, monkeypatch):
    (path,) = write_shards(tmp_path / "in", {"s.tar": good("a") + [("b.jpg", img()), ("b.json", js(caption="boom"))]})
    monkeypatch.setattr(shard, "parse_json", _raise_on(b"boom", KeyboardInterrupt(), real_parse_json))
    with pytest.raises(KeyboardInterrupt):
        shard.convert_shard(source(path), tmp_path / "out1", Settings(workers=1))
    damage = tarstream.TarFormatError("damaged here", offset=1234, member="b.json")
    monkeypatch.setattr(shard, "parse_json", _raise_on(b"boom", damage, real_parse_json))
    res = convert([path], tmp_path / "out2")
    assert res.result("s").error and "damaged here" in res.result("s").error
    assert [r["reason"] for r in res.rejects if r["member"] == "b.json"] == [Reason.SHARD_UNREADABLE]


# -- same sample, same result from every source ----------------------------------------------------------


def jpeg_with_big_header(w: int, h: int, marker: int, nbytes: int) -> bytes:
    """A JPEG whose SOF comes after `nbytes` of APPn/COM segments (marker 0xE1: APP1, 0xFE: COM)."""
    base = synth.make_image("jpeg", w, h, 0, random.Random(w * h))
    segments = bytearray()
    filler = random.Random(marker).randbytes(65533)
    while len(segments) < nbytes:
        segments += struct.pack(">BBH", 0xFF, marker, 65535) + filler
    return base[:2] + bytes(segments) + base[2:]


SOURCES = ["tar", "tar.gz", "stream", "pipe"]


def _shard_from(tmp_path: Path, members: list, kind: str) -> Path:
    raw = tar_bytes(members)
    folder = tmp_path / f"in-{kind}"
    folder.mkdir()
    if kind == "tar.gz":
        path = folder / "s.tar.gz"
        path.write_bytes(gzip.compress(raw, compresslevel=1, mtime=0))
    else:
        path = folder / "s.tar"
        path.write_bytes(raw)
    return path


def _convert_from(tmp_path: Path, members: list, kind: str, **overrides):
    path = _shard_from(tmp_path, members, kind)
    mode = {"tar": "file", "tar.gz": "file"}.get(kind, kind)
    return convert([path], tmp_path / f"out-{kind}", mode, **overrides)


@pytest.mark.parametrize("images", [True, False], ids=["images", "no-images"])
@pytest.mark.parametrize("kind", SOURCES)
def test_header_behind_a_megabyte_of_app_data_is_read_from_every_source(tmp_path, kind, images):
    app1 = jpeg_with_big_header(321, 123, 0xE1, 1_100_000)
    com = jpeg_with_big_header(77, 55, 0xFE, 1_300_000)
    assert imageheader.image_size_from_bytes(app1[: 1 << 20]) is None  # the header is past the first MiB
    assert imageheader.image_size_from_bytes(app1) == (321, 123)
    members = [("app1.jpg", app1), ("app1.json", nosize()), ("com.json", nosize()), ("com.jpg", com)] + good("ok")
    res = _convert_from(tmp_path, members, kind, images=images, captions=images)
    assert res.rejects == []
    assert {r["key"]: (r["width"], r["height"]) for r in res.rows} == {
        "app1": (321, 123),
        "com": (77, 55),
        "ok": (64, 48),
    }
    if images:
        assert (res.out / "data/s/app1.jpg").read_bytes() == app1


@pytest.mark.parametrize("kind", SOURCES)
def test_a_header_past_the_probe_limit_is_unreadable_from_every_source(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(imageheader, "PROBE_LIMIT", 1 << 20)
    far = jpeg_with_big_header(40, 30, 0xFE, 1_200_000)
    near = jpeg_with_big_header(41, 31, 0xFE, 900_000)
    members = [("far.jpg", far), ("far.json", nosize()), ("near.jpg", near), ("near.json", nosize())]
    for images in (True, False):
        (tmp_path / str(images)).mkdir()
        res = _convert_from(tmp_path / str(images), members, kind, images=images, captions=images)
        assert [r["key"] for r in res.rows] == ["near"] and (res.rows[0]["width"], res.rows[0]["height"]) == (41, 31)
        assert res.reject("far.jpg")["reason"] == Reason.SIZE_UNREADABLE


def test_streaming_probe_memory_is_bounded(tmp_path, monkeypatch):
    """Without images, from a stream: the probe keeps what it read (at most PROBE_LIMIT), never the member."""
    monkeypatch.setattr(imageheader, "PROBE_LIMIT", 2 << 20)
    rng = random.Random(5)
    big = synth.make_image("png", 50, 40, 24 << 20, rng)  # header first, 24 MiB of chunk data after it
    far = jpeg_with_big_header(40, 30, 0xFE, 8 << 20)  # no SOF in the first 2 MiB
    members = [("big.png", big), ("big.json", nosize()), ("far.jpg", far), ("far.json", nosize())]
    path = _shard_from(tmp_path, members, "tar")
    del big, far, members
    tracemalloc.start()
    try:
        res = convert([path], tmp_path / "out", "stream", images=False, captions=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(r["key"], r["width"], r["height"]) for r in res.rows] == [("big", 50, 40)]
    assert res.reject("far.jpg")["reason"] == Reason.SIZE_UNREADABLE
    # stream chunks (1 MiB) + the probe's 2 MiB + what Pillow keeps of the segments it parsed (2 MiB)
    assert peak < 8 << 20, f"peak traced memory {peak} bytes"


def test_stream_view_reads_forward_only_as_far_as_asked():
    data = bytes(range(256)) * 4096  # 1 MiB
    taken = []

    def read(n):
        start = sum(taken)
        taken.append(n)
        return data[start : start + n]

    view = imageheader.StreamView(read, 300_000, head=b"")
    assert view.read(10) == data[:10] and sum(taken) == imageheader.PROBE_READ_BYTES
    view.seek(200_000)
    assert view.read(5) == data[200_000:200_005] and sum(taken) <= 200_005 + imageheader.PROBE_READ_BYTES
    view.seek(3)
    assert view.read(4) == data[3:7]  # back: kept
    assert view.seek(0, io.SEEK_END) == 300_000 and view.read(1) == b""
    assert sum(taken) <= 300_000
    view = imageheader.StreamView(read, 10, head=b"ab")
    assert view.read() == b"ab" + data[sum(taken) - 8 : sum(taken)]


def test_a_read_error_while_probing_is_raised_not_taken_for_unreadable():
    def read(n):
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError, match="Input/output"):
        imageheader.probe_stream(read, 1000, head=b"\xff\xd8\xff")

    def pread(offset, n):
        raise tarstream.TarFormatError("cut", offset=offset)

    with pytest.raises(tarstream.TarFormatError):
        imageheader.probe_range(pread, 0, 1000)


# -- images that are not images ------------------------------------------------------------------------


def pillow_image(fmt: str, w: int = 37, h: int = 21, **kw) -> bytes:
    buf = io.BytesIO()
    frame = Image.new("RGB", (w, h), (200, 30, 30))
    if kw.pop("animated", False):
        kw.update(save_all=True, append_images=[Image.new("RGB", (w, h))], duration=100)
    frame.save(buf, fmt, **kw)
    return buf.getvalue()


INVALID = {
    # name: (bytes, words in the detail)
    "empty.jpg": (b"", "empty (0 bytes)"),
    "png-bytes.jpg": (img("png"), "not a JPEG signature as the extension '.jpg' says: they are a PNG signature"),
    "jpeg-bytes.png": (img("jpeg"), "not a PNG signature as the extension '.png' says: they are a JPEG signature"),
    "html.jpeg": (b"<!DOCTYPE html><html>404 Not Found</html>", "they begin b'<!DOCTYPE ht"),
    "wave.webp": (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(20), "no image signature"),
    "text.gif": (b"GIF90a not a gif", "not a GIF signature"),
    "cut.JPG": (b"\xff\xd8", "not a JPEG signature"),
    "bmp-bytes.tif": (pillow_image("BMP"), "they are a BMP signature"),
}


@pytest.mark.parametrize("mode, images", [("file", True), ("stream", True), ("stream", False), ("pipe", True)])
def test_images_that_are_not_images_are_rejected_even_with_a_json_size(tmp_path, mode, images):
    members = good("a")
    for name, (data, _) in INVALID.items():
        members += [(name, data), (name.rsplit(".", 1)[0] + ".json", js())]  # the JSON has width and height
    members += [("lonely.jpg", b"GIF89a"), ("readme.txt", b"hello"), ("logo.svg", b"<svg/>")] + good("z")
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / "out", mode, images=images, captions=images)
    assert res.filenames == ["s/a.jpg", "s/z.jpg"]
    for name, (_, words) in INVALID.items():
        line = res.reject(name)
        assert line["reason"] == Reason.IMAGE_INVALID and words in line["detail"], line
        assert res.reasons(name.rsplit(".", 1)[0] + ".json") == []  # one line for the sample
    lonely = res.reject("lonely.jpg")
    assert lonely["reason"] == Reason.IMAGE_INVALID and "no JSON member" in lonely["detail"]
    assert res.result("s").notes["other_members"] == 2  # readme.txt and logo.svg, as before
    assert not list((tmp_path / "out/.dalle3-etl/staging").iterdir())


FORMATS = {  # member name: Pillow format and options
    "g.gif": ("GIF", {}),
    "b.bmp": ("BMP", {}),
    "t.tiff": ("TIFF", {}),
    "lzw.TIF": ("TIFF", {"compression": "tiff_lzw"}),
    "lossy.webp": ("WEBP", {"lossless": False}),
    "lossless.webp": ("WEBP", {"lossless": True}),
    "extended.webp": ("WEBP", {"exif": b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00"}),
    "animated.webp": ("WEBP", {"animated": True}),
}


@pytest.mark.parametrize("mode, images", [("file", True), ("stream", True), ("stream", False)])
def test_every_format_pillow_opens_is_converted_with_its_header_size(tmp_path, mode, images):
    members = []
    for i, (name, (fmt, options)) in enumerate(FORMATS.items()):
        members += [(name, pillow_image(fmt, 37 + i, 21 + i, **options)), (name.rsplit(".", 1)[0] + ".json", nosize())]
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / "out", mode, images=images, captions=images)
    assert res.rejects == []
    assert res.filenames == [f"s/{name}" for name in FORMATS]
    assert [(r["width"], r["height"]) for r in res.rows] == [(37 + i, 21 + i) for i in range(len(FORMATS))]
    if images:
        report = verify(tmp_path / "out", deep=True)  # verify knows them as images, and reads their headers
        assert report.ok, [c.to_json() for c in report.failed]
        assert report.counts["images_on_disk"] == len(FORMATS)


@pytest.mark.parametrize(
    "kw",
    [
        dict(lossless=False),
        dict(lossless=True),
        dict(animated=True),
        dict(exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00"),
    ],
    ids=["VP8", "VP8L", "VP8X-animated", "VP8X-exif"],
)
@pytest.mark.parametrize("size", [(1, 1), (16383, 3), (3, 16383), (1000, 777)])
def test_webp_size_is_the_size_pillow_reads(kw, size):
    data = pillow_image("WEBP", *size, **dict(kw))
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == size
    assert imageheader.image_size(io.BytesIO(data)) == size
    assert imageheader.image_size(io.BytesIO(data[:30])) == size  # the first 30 bytes are enough


def test_signatures():
    assert imageheader.sniff(b"MM\x00*\x00\x00\x00\x08") == "TIFF"
    assert imageheader.sniff(b"II*\x00\x08\x00\x00\x00") == "TIFF"
    assert imageheader.sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WebP"
    assert imageheader.sniff(b"RIFF\x00\x00\x00\x00AVI LIST") is None
    assert imageheader.sniff(b"GIF87a") == imageheader.sniff(b"GIF89a") == "GIF"
    for ext in ("jpg", "jpeg"):
        assert imageheader.signature_problem(ext, b"\xff\xd8\xff\xe0\x00\x10JFIF") is None
    assert imageheader.signature_problem("tif", b"MM\x00*") is None
    assert imageheader.signature_problem("tiff", b"II*\x00") is None
    assert imageheader.signature_problem("bmp", b"BM") is None
    assert "PNG signature" in imageheader.signature_problem("webp", b"\x89PNG\r\n\x1a\n\x00")
    assert set(imageheader.EXT_FORMAT) == IMAGE_EXTENSIONS


# -- captions ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["file", "stream"])
def test_invisible_captions_fall_back_and_control_characters_are_removed(tmp_path, mode):
    cases = {
        "zw": (dict(caption="\u200b\u200c\u200d\u2060\ufeff", long_caption="the long one"), "the long one"),
        "zw-spaces": (
            dict(caption=" \u200b \n\u00ad ", long_caption="\u2066\u2069", short_caption2=["\u200b", "third"]),
            "third",
        ),
        "ctl": (dict(caption="a\x00b\x1b[31mred\x07 \x7fdel\x9bc1"), "ab[31mred delc1"),
        "ctl-ws": (dict(caption="tab\tnew\nline\x85nel\x1fus"), "tab new line nel us"),
        "zwj-kept": (dict(caption="family \U0001f468\u200d\U0001f469 sign"), "family \U0001f468\u200d\U0001f469 sign"),
        "plain": (dict(caption="  A  red fox,\r\n in the snow.  "), "A red fox, in the snow."),
    }
    members = []
    for key, (fields, _) in cases.items():
        members += [(f"{key}.jpg", img()), (f"{key}.json", js(**fields))]
    members += [("none.jpg", img()), ("none.json", js(caption="\u200b\x00", long_caption=...))]
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / "out", mode)
    assert {r["key"]: r["caption"] for r in res.rows} == {k: c for k, (_, c) in cases.items()}
    for key, (_, caption) in cases.items():  # check_output also holds the .txt to the parquet
        assert (tmp_path / "out/data/s" / f"{key}.txt").read_bytes() == caption.encode()
    line = res.reject("none.jpg")
    assert line["reason"] == Reason.NO_CAPTION
    assert "short_caption: empty (only control or invisible format characters)" in line["detail"]


# -- output names: never reused -----------------------------------------------------------------------------


def _fold(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


class CaseInsensitiveFS:
    """Makes the paths under `root` behave as on macOS (APFS/HFS+ default): a name finds an existing entry
    that differs only in letter case or Unicode normalization, and the first spelling is kept. Each path is
    resolved component by component against the real folder listing, then the REAL os call runs on it, with
    the caller's flags: O_EXCL, O_TRUNC, rename-over all behave as they would there."""

    CALLS = ("open", "mkdir", "rmdir", "unlink", "remove", "replace", "rename", "link")

    def __init__(self, root: Path, monkeypatch):
        self.prefix = os.path.join(root, "")
        self.real = {name: getattr(os, name) for name in self.CALLS}
        for name in self.CALLS:
            monkeypatch.setattr(os, name, self._wrap(name))

    def resolve(self, path):
        if isinstance(path, Path):
            path = str(path)
        if not isinstance(path, str) or not path.startswith(self.prefix):
            return path
        current = self.prefix[:-1]
        for part in path[len(self.prefix) :].split("/"):
            try:
                names = os.listdir(current)
            except OSError:
                names = []
            want = _fold(part)
            current += "/" + next((n for n in names if _fold(n) == want), part)
        return current

    def _wrap(self, name):
        real = self.real[name]
        two_paths = name in ("replace", "rename", "link")

        def call(*args, **kwargs):
            if kwargs.get("dir_fd") is not None or kwargs.get("src_dir_fd") is not None:
                return real(*args, **kwargs)
            n = 2 if two_paths else 1
            return real(*map(self.resolve, args[:n]), *args[n:], **kwargs)

        return call


@pytest.mark.parametrize("mode", ["file", "stream"])
def test_case_and_normalization_twins_clash_on_a_case_insensitive_file_system(tmp_path, monkeypatch, mode):
    first = {name: img() for name in ("case.jpg", "caf\u00e9.jpg", "Dir/a.jpg")}
    twins = {name: img() for name in ("Case.jpg", "CASE.jpeg", "cafe\u0301.jpg", "dir/b.jpg", "DIR/a.jpg")}
    members = []
    for name, data in [*first.items(), *twins.items()]:
        members += [(name, data), (name.rsplit(".", 1)[0] + ".json", js(caption=f"caption of {name}"))]
    (path,) = write_shards(tmp_path / "in", {"s.tar": members + good("other")})
    out = tmp_path / "out"
    CaseInsensitiveFS(out, monkeypatch)
    summary = run_convert([source(path, mode)], out, Settings(workers=1))
    monkeypatch.undo()
    res = outcome(out, summary)
    assert sorted(res.filenames) == sorted(f"s/{n}" for n in [*first, "other.jpg"])
    for name, data in first.items():  # the first image and caption are the ones under their row
        assert (out / "data/s" / name).read_bytes() == data
        stem = name.rsplit(".", 1)[0]
        assert (out / "data/s" / f"{stem}.txt").read_text() == f"caption of {name}"
    for name in twins:
        line = res.reject(name)
        assert line["reason"] == Reason.NAME_CLASH and "case-insensitive" in line["detail"], line
        assert res.reasons(name.rsplit(".", 1)[0] + ".json") == []
    on_disk = {str(p.relative_to(out / "data/s")) for p in (out / "data/s").rglob("*")}
    assert on_disk == {
        "case.jpg",
        "case.txt",
        "caf\u00e9.jpg",
        "caf\u00e9.txt",
        "Dir",
        "Dir/a.jpg",
        "Dir/a.txt",
        "other.jpg",
        "other.txt",
    }  # nothing of the losers, not even a folder
    assert res.summary.exit_code == 0


@pytest.mark.parametrize(
    "mode, images, captions", [("file", True, True), ("stream", True, True), ("file", False, True)]
)
def test_an_existing_file_at_the_target_is_never_overwritten(tmp_path, monkeypatch, mode, images, captions):
    """On a real file system: whatever already holds an output name is kept, and the sample is a clash."""
    real_path = sinks.FileTree.path
    taken = {"s/b.jpg", "s/b.txt"} if images else {"s/b.txt"}

    def path_with_a_squatter(self, relpath):
        full = real_path(self, relpath)
        if relpath in taken:
            Path(full).write_bytes(b"precious")
        return full

    monkeypatch.setattr(sinks.FileTree, "path", path_with_a_squatter)
    (path,) = write_shards(tmp_path / "in", {"s.tar": good("a", "b", "c")})
    summary = run_convert([source(path, mode)], tmp_path / "out", Settings(workers=1, images=images, captions=captions))
    rejects = [orjson.loads(line) for line in (tmp_path / "out/rejects.jsonl").read_bytes().splitlines()]
    assert [(r["member"], r["reason"]) for r in rejects] == [("b.jpg", Reason.NAME_CLASH)]
    data = tmp_path / "out/data/s"
    assert (data / ("b.jpg" if images else "b.txt")).read_bytes() == b"precious"
    assert (data / "a.txt").read_text() == "a red fox in the snow" and summary.exit_code == 0


def test_file_tree_never_truncates_and_makes_deep_folders_without_recursion(tmp_path):
    tree = sinks.FileTree(tmp_path / "root", Root(tmp_path))
    assert tree.write_text("x/y.txt", "first") == 5
    with pytest.raises(FileExistsError):
        tree.write_text("x/y.txt", "second")
    assert (tmp_path / "root/x/y.txt").read_text() == "first"
    deep = "d/" * 1500 + "f.txt"  # os.makedirs would recurse 1,500 times
    tree.write_text(deep, "deep")
    assert (tmp_path / "root" / deep).read_text() == "deep"
    os.unlink(tmp_path / "root" / deep)
    tree.prune(deep)
    assert sorted(os.listdir(tmp_path / "root")) == ["x"]
    tree.write_text(deep, "again")  # pruned folders are made again, not taken for a twin
    os.unlink(tmp_path / "root" / deep)
    tree.prune(deep)  # (shutil.rmtree, cleaning tmp_path, would recurse 1,500 times before Python 3.13)
    (tmp_path / "root/file").write_text("")
    with pytest.raises(FileExistsError):  # a folder this tree did not make: another member's, or a twin
        tree.path("file/z.txt")
