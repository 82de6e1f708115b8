"""check.webshart: `verify` of a --webshart output fails for each way an index can stop matching its tar, and
the header-name rule holds for plain, GNU long-name and pax members."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import orjson
import pytest
from badinput_helpers import img, js, tar_bytes
from conftest import convert

from dalle3_etl.check.verify import verify
from dalle3_etl.check.webshart import header_problem

LONG = "deep/" * 30 + "long-name.jpg"


def _tar(fmt: int, names: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name in names:
            ti = tarfile.TarInfo(name)
            ti.size = 3
            tf.addfile(ti, io.BytesIO(b"abc"))
    return buf.getvalue()


def _headers(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: data[m.offset_data - 512 : m.offset_data] for m in tf}


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_the_header_before_the_data_names_the_member(fmt):
    names = ["plain.jpg", "a/b/c.png"] + ([] if fmt == tarfile.USTAR_FORMAT else [LONG, "ünï/cödé.jpg"])
    headers = _headers(_tar(fmt, names))
    for name in names:
        assert header_problem(headers[name], name, 3) is None, (fmt, name)
        assert "size" in header_problem(headers[name], name, 4)
    assert "names" in header_problem(headers["plain.jpg"], "other.jpg", 3)
    assert "names" in header_problem(headers["a/b/c.png"], "a/b/d.png", 3)
    if fmt != tarfile.USTAR_FORMAT:  # a long name must still start like the header's truncated one
        assert "names" in header_problem(headers[LONG], "x" + LONG, 3)
    broken = bytearray(headers["plain.jpg"])
    broken[0] ^= 1
    assert "no valid tar header" in header_problem(bytes(broken), "plain.jpg", 3)
    assert "no valid tar header" in header_problem(b"\0" * 512, "plain.jpg", 3)


@pytest.fixture
def output(tmp_path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    items = []
    for i in range(3):
        items += [(f"k{i}.jpg", img("jpeg", 64, 48)), (f"k{i}.json", js(f"caption {i}"))]
    (src / "data-000000.tar").write_bytes(tar_bytes(items))
    out = tmp_path / "out"
    convert([src], out, webshart=True, workers=1)
    assert verify(out).ok
    return out


def _edit(out: Path, change) -> None:
    path = out / "webshart" / "data-000000.json"
    index = orjson.loads(path.read_bytes())
    change(index)
    path.write_bytes(orjson.dumps(index))


def _problems(out: Path) -> list[str]:
    return verify(out).checks["webshart"].examples


@pytest.mark.parametrize(
    "change, why",
    [
        (lambda ix: ix["files"]["k1.jpg"].update(offset=ix["files"]["k1.jpg"]["offset"] + 512), "no valid tar header"),
        (lambda ix: ix["files"]["k1.jpg"].update(offset=ix["files"]["k2.jpg"]["offset"]), "names"),
        (lambda ix: ix["files"]["k1.jpg"].update(length=7), "size"),
        (lambda ix: ix["files"]["k1.jpg"].update(offset=10**9), "outside the tar"),
        (lambda ix: ix["files"]["k1.jpg"].pop("width"), "no width/height"),
        (lambda ix: ix["files"]["k1.jpg"].update(captions=" "), "no caption"),
        (lambda ix: ix["files"]["k1.jpg"].update(captions=["a", ""]), "no caption"),
        (lambda ix: ix.update(filesize=1), "bytes"),
    ],
)
def test_each_index_fault_fails_verify(output, change, why):
    _edit(output, change)
    problems = _problems(output)
    assert problems and why in problems[0], problems


def test_unparsable_or_missing_index_fails_verify(output):
    index = output / "webshart" / "data-000000.json"
    index.write_bytes(b"{not json")
    assert "not a webshart index" in _problems(output)[0]
    index.unlink()
    report = verify(output)
    assert "no index" in report.checks["webshart"].examples[0]
    assert report.checks["shard_rows"].status == "failed"


def test_an_entry_pointing_elsewhere_fails_dataloader(output):
    path = output / "multidatabackend.json"
    entries = orjson.loads(path.read_bytes())
    entries[0]["metadata"] = str(output)
    path.write_bytes(orjson.dumps(entries))
    report = verify(output)
    assert report.checks["dataloader"].status == "failed"
    assert "this output's is" in report.checks["dataloader"].examples[0]


def test_other_outputs_skip_the_webshart_check(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "data-000000.tar").write_bytes(tar_bytes([("k.jpg", img()), ("k.json", js())]))
    convert([src], tmp_path / "out", workers=1)
    report = verify(tmp_path / "out")
    assert report.ok and report.checks["webshart"].status == "skipped"
