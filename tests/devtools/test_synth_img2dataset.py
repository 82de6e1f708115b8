"""`synth --style img2dataset`: img2dataset's shard and key names, member order and JSON fields; WebP of the
three kinds (or JPEG); same arguments, same bytes; the truth matches the members."""

from __future__ import annotations

import io
import tarfile

import orjson
import pytest
from PIL import Image, features
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import clean_caption, read_truth, write_img2dataset_corpus
from dalle3_etl.devtools.synth import img2dataset as i2d

I2D_FIELDS = {
    "url",
    "caption",
    "key",
    "status",
    "error_message",
    "width",
    "height",
    "original_width",
    "original_height",
    "exif",
    "sha256",
}


def _members(path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tf:
        return [(ti.name, tf.extractfile(ti).read()) for ti in tf]


@pytest.mark.skipif(not features.check("webp"), reason="Pillow without WebP")
def test_shards_look_like_img2dataset_output(tmp_path):
    truth = write_img2dataset_corpus(tmp_path, shards=2, per_shard=12, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.tar", "00001.tar", "truth.jsonl"]
    members = _members(tmp_path / "00001.tar")
    names = [name for name, _ in members]
    assert names[:3] == ["000010000.json", "000010000.txt", "000010000.webp"]  # webdataset's sorted field order
    assert len(names) == 36
    chunks = set()
    for (_, data), row in zip(members[0::3], truth[12:], strict=True):
        meta = orjson.loads(data)
        assert set(meta) == I2D_FIELDS and meta["status"] == "success" and meta["key"] == row.key
        assert (meta["original_width"], meta["original_height"]) == (3 * row.width, 3 * row.height)
    for (_, text), (_, image), row in zip(members[1::3], members[2::3], truth[12:], strict=True):
        assert (clean_caption(text.decode()) or None) == row.caption
        with Image.open(io.BytesIO(image)) as im:
            assert im.size == (row.width, row.height) and im.format == "WEBP"
        chunks.add(image[12:16])
    assert chunks == {b"VP8 ", b"VP8L", b"VP8X"}
    assert [r.caption for r in truth].count(None) == 2  # one empty .txt per 50 samples, from the 7th
    assert read_truth(tmp_path / "truth.jsonl") == truth


def test_same_arguments_same_bytes_and_jpeg_without_webp(tmp_path, monkeypatch):
    write_img2dataset_corpus(tmp_path / "a", shards=1, per_shard=8, seed=4)
    write_img2dataset_corpus(tmp_path / "b", shards=1, per_shard=8, seed=4)
    assert (tmp_path / "a" / "00000.tar").read_bytes() == (tmp_path / "b" / "00000.tar").read_bytes()
    write_img2dataset_corpus(tmp_path / "c", shards=1, per_shard=8, seed=5)
    assert (tmp_path / "a" / "00000.tar").read_bytes() != (tmp_path / "c" / "00000.tar").read_bytes()
    monkeypatch.setattr(i2d, "webp_available", lambda: False)
    truth = write_img2dataset_corpus(tmp_path / "d", shards=1, per_shard=4, seed=4)
    members = _members(tmp_path / "d" / "00000.tar")
    assert [n for n, _ in members[:3]] == ["000000000.jpg", "000000000.json", "000000000.txt"]
    assert members[0][1][:2] == b"\xff\xd8" and truth[0].image_member == "000000000.jpg"


def test_cli_style_option(tmp_path):
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "s"), "--style", "img2dataset", "--shards", "1", "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s" / "00000.tar").is_file()
    bad = CliRunner().invoke(app, ["synth", str(tmp_path / "t"), "--style", "laion"])
    assert bad.exit_code == 2 and not (tmp_path / "t").exists()
