"""Untrusted shards: every bad case gets a clear reason naming shard and member, good samples are kept, and
nothing is written outside OUT. Shards are hand-made here (tarfile, or raw bytes where tarfile refuses).

Most cases run twice: from a seekable file (image bodies seeked over) and as a non-seekable stream (image
bodies streamed and staged), since the two paths share the reasons but not the code that reads."""

from __future__ import annotations

import gzip
import lzma
import struct
import tarfile
import tracemalloc
import zlib
from pathlib import Path

import orjson
import pytest
from badinput_helpers import (
    MODES,
    check_output,
    convert,
    img,
    js,
    member_offsets,
    sample,
    snapshot,
    special,
    tar_bytes,
    write_shards,
)

from dalle3_etl.shard.rows import REASONS, Reason
from dalle3_etl.shard.samples import Pairing


def good(*keys: str) -> list:
    return [m for k in keys for m in sample(k)]


def assert_nothing_outside(before: dict, after: dict) -> None:
    assert after == before, sorted(set(after) ^ set(before))[:10]


# -- damaged tar structure ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES + ("pipe",))
def test_truncated_inside_a_header_keeps_the_samples_before(tmp_path, mode):
    data = tar_bytes(good("a", "b") + [("c.json", js()), ("c.jpg", img())] + good("d"))
    hdr, _ = member_offsets(data)["c.jpg"]
    (path,) = write_shards(tmp_path / "in", {"s1.tar": data[: hdr + 200]})
    res = convert([path], tmp_path / "out", mode)
    assert res.filenames == ["s1/a.jpg", "s1/b.jpg"]
    (damage,) = [r for r in res.rejects if r["reason"] == Reason.SHARD_UNREADABLE]
    assert damage["shard"] == "s1" and "truncated inside header" in damage["detail"]
    assert "c.json" in damage["detail"]  # names the last good member
    # the JSON read before the damage is not lost silently
    lost = res.reject("c.json")
    assert lost["reason"] == Reason.JSON_WITHOUT_IMAGE and "unreadable at offset" in lost["detail"]
    result = res.result("s1")
    assert result.ok and result.error and "truncated" in result.error
    assert res.summary.exit_code == 1


@pytest.mark.parametrize("mode", MODES + ("pipe",))
def test_truncated_inside_a_member_body(tmp_path, mode):
    data = tar_bytes(good("a") + [("c.json", js()), ("c.jpg", img(nbytes=5000))] + good("d"))
    _, body = member_offsets(data)["c.jpg"]
    (path,) = write_shards(tmp_path / "in", {"s1.tar": data[: body + 1000]})
    res = convert([path], tmp_path / "out", mode)
    assert res.filenames == ["s1/a.jpg"]
    damage = res.reject("c.jpg")
    assert damage["reason"] == Reason.SHARD_UNREADABLE and "truncated inside member 'c.jpg'" in damage["detail"]
    assert res.reject("c.json")["reason"] == Reason.JSON_WITHOUT_IMAGE
    assert not list((tmp_path / "out" / ".dalle3-etl" / "staging").iterdir())  # staged partial body removed
    assert res.summary.exit_code == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("damage", ["checksum", "garbage"])
def test_bad_header_after_good_members(tmp_path, mode, damage):
    data = bytearray(tar_bytes(good("a", "b", "c")))
    hdr, _ = member_offsets(bytes(data))["b.jpg"]
    if damage == "checksum":
        data[hdr + 148 : hdr + 156] = b"0000000\x00"  # wrong checksum, rest intact
    else:
        data[hdr : hdr + 512] = bytes(range(256)) * 2
    (path,) = write_shards(tmp_path / "in", {"s1.tar": bytes(data)})
    res = convert([path], tmp_path / "out", mode)
    assert res.filenames == ["s1/a.jpg"]
    (line,) = [r for r in res.rejects if r["reason"] == Reason.SHARD_UNREADABLE]
    assert f"bad header checksum at offset {hdr}" in line["detail"] and "'a.json'" in line["detail"]
    assert line["member"] == f"@{hdr}"
    assert res.summary.exit_code == 1


@pytest.mark.parametrize("mode", MODES)
def test_empty_file_and_not_a_tar_fail_alone(tmp_path, mode):
    paths = write_shards(
        tmp_path / "in",
        {
            "a-1.tar": b"",
            "a-2.tar": b"this is an HTML error page, not a tar\n" * 40,
            "a-3.tar": good("x", "y"),
        },
    )
    res = convert(paths, tmp_path / "out", mode)
    assert res.filenames == ["a-3/x.jpg", "a-3/y.jpg"]  # the good shard is converted
    by_shard = {r["shard"]: r for r in res.rejects}
    assert by_shard["a-1"]["reason"] == Reason.SHARD_UNREADABLE and "empty file" in by_shard["a-1"]["detail"]
    assert by_shard["a-2"]["reason"] == Reason.SHARD_UNREADABLE and "not a tar archive" in by_shard["a-2"]["detail"]
    assert {r.shard_id for r in res.summary.failed} == {"a-1", "a-2"}
    assert res.summary.exit_code == 1


def test_gzip_tar_is_converted_like_the_plain_tar(tmp_path):
    members = good("a", "b") + [("c.jpg", img()), ("c.json", js(width=..., height=...))]
    plain = write_shards(tmp_path / "plain", {"s1.tar": members})
    packed = tmp_path / "gz" / "s1.tar.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(plain[0].read_bytes(), mtime=0))
    ref = convert(plain, tmp_path / "ref")
    res = convert([packed], tmp_path / "out")
    assert res.rejects == [] and res.summary.exit_code == 0
    assert (tmp_path / "out" / "dalle3.parquet").read_bytes() == (tmp_path / "ref" / "dalle3.parquet").read_bytes()
    for row in ref.rows:
        assert (tmp_path / "out/data" / row["filename"]).read_bytes() == (
            tmp_path / "ref/data" / row["filename"]
        ).read_bytes()


def decompressed_prefix(compress, data: bytes) -> bytes:
    """What a streaming decompressor gets out of a cut compressed stream."""
    dec = zlib.decompressobj(wbits=31) if compress is gzip.compress else lzma.LZMADecompressor()
    return dec.decompress(data)


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress], ids=["gzip", "xz"])
def test_damaged_compressed_tar_is_a_damaged_shard_not_a_crash(tmp_path, compress):
    raw = tar_bytes(good("a", "b", "c", "d"))
    c_body = member_offsets(raw)["c.jpg"][1]
    packed = compress(raw)
    # cut the compressed stream where its decompressed prefix ends inside c.jpg's data
    lo, hi = 0, len(packed)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decompressed_prefix(compress, packed[:mid])) > c_body + 100:
            hi = mid
        else:
            lo = mid + 1
    assert c_body < len(decompressed_prefix(compress, packed[:lo])) < member_offsets(raw)["c.json"][0]
    paths = write_shards(tmp_path / "in", {"cut.tar": packed[:lo], "tail.tar": packed[:-3], "ok.tar": good("z")})
    res = convert(paths, tmp_path / "out")
    cut = res.result("cut")
    assert cut.ok and cut.error and cut.failure is None  # damaged input: kept, not an output failure to retry
    assert "data is damaged" in cut.error
    # what was decompressed before the cut is kept
    assert [f for f in res.filenames if f.startswith("cut/")] == ["cut/a.jpg", "cut/b.jpg"]
    line = next(r for r in res.rejects if r["shard"] == "cut" and r["reason"] == Reason.SHARD_UNREADABLE)
    assert line["member"] in ("c.jpg", "c.json")
    # only the compressed trailer is missing: every sample is there, and the shard is still reported
    tail = res.result("tail")
    assert [f for f in res.filenames if f.startswith("tail/")] == [f"tail/{k}.jpg" for k in "abcd"]
    assert tail.error and "damaged" in tail.error
    assert "ok/z.jpg" in res.filenames and res.result("ok").error is None
    assert res.summary.exit_code == 1


def test_gzip_with_bad_crc_is_reported(tmp_path):
    packed = bytearray(gzip.compress(tar_bytes(good("a")), mtime=0))
    packed[-8] ^= 0xFF  # CRC32 of the trailer
    (path,) = write_shards(tmp_path / "in", {"s.tar": bytes(packed)})
    res = convert([path], tmp_path / "out")
    (line,) = [r for r in res.rejects if r["reason"] == Reason.SHARD_UNREADABLE]
    assert "gzip data is damaged" in line["detail"] and "CRC" in line["detail"]


def test_zstd_tar_is_refused_with_a_message(tmp_path):
    (path,) = write_shards(tmp_path / "in", {"s.tar": b"\x28\xb5\x2f\xfd" + bytes(600)})
    res = convert([path], tmp_path / "out")
    assert "zstd" in res.result("s").error and "decompress it first" in res.result("s").error


# -- member names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_unsafe_names_are_rejected_and_nothing_escapes(tmp_path, mode, fmt):
    escape = tmp_path / "escaped"
    deep = "../" * 12
    long_ok = "d" * 120 + "/" + "e" * 200 + "/" + "f" * 150  # 472 bytes; every component fits
    nul = tarfile.TarInfo("placeholder.jpg")
    nul.pax_headers = {"path": "nul\x00evil.jpg"}
    members = [
        (f"{deep}escaped.jpg", img()),
        (f"{deep}escaped.json", js()),
        (f"{escape}/abs.jpg", img()),
        (f"{escape}/abs.json", js()),
        ("C:\\evil\\win.jpg", img()),
        ("C:\\evil\\win.json", js()),
        ("ctl\x1b[31m.jpg", img()),
        ("ctl\x1b[31m.json", js()),
        ("tab\there.jpg", img()),
        ("tab\there.json", js()),
        ("x" * 300 + ".jpg", img()),
        ("x" * 300 + ".json", js()),
        (f"{long_ok}.jpg", img()),
        (f"{long_ok}.json", js()),
        *good("ok"),
    ]
    if fmt == tarfile.PAX_FORMAT:
        members += [(nul, img())]
    (path,) = write_shards(tmp_path / "in", {"s.tar": tar_bytes(members, fmt)})
    before = snapshot(tmp_path.parent, skip=tmp_path / "out")
    res = convert([path], tmp_path / "out", mode)
    assert_nothing_outside(before, snapshot(tmp_path.parent, skip=tmp_path / "out"))
    assert not escape.exists()
    assert sorted(res.filenames) == sorted([f"s/{long_ok}.jpg", "s/ok.jpg"])
    assert (tmp_path / "out" / "data" / "s" / f"{long_ok}.txt").exists()
    expected = {
        f"{deep}escaped.jpg": "'..'",
        f"{escape}/abs.jpg".lstrip("/"): None,  # see below: absolute names keep their leading slash
        "C:\\evil\\win.jpg": "",
        "ctl\x1b[31m.jpg": "control character",
        "tab\there.jpg": "control character",
    }
    for member, words in expected.items():
        if words is None:
            member = f"{escape}/abs.jpg"
            words = "absolute"
        line = res.reject(member)  # one line per sample: the image member at fault
        assert line["reason"] == Reason.UNSAFE_MEMBER and line["shard"] == "s" and words in line["detail"]
        json_member = member[: -len(".jpg")] + ".json"
        assert res.reasons(json_member) == [Reason.UNSAFE_MEMBER]
    # a component over 255 bytes is not unsafe: the file system refuses to create it
    too_long = res.reject("x" * 300 + ".jpg")
    assert too_long["reason"] == Reason.NAME_UNUSABLE and "File name too long" in too_long["detail"]
    if fmt == tarfile.PAX_FORMAT:
        assert res.reject("nul\x00evil.jpg")["reason"] == Reason.UNSAFE_MEMBER
    # meta records (GNU long names, pax headers) are understood, never members
    assert not any("LongLink" in r["member"] or "PaxHeader" in r["member"] for r in res.rejects)
    assert res.summary.exit_code == 0


def test_non_utf8_member_name_is_reported_readably(tmp_path):
    buf = tar_bytes([])
    import io

    raw = io.BytesIO()
    with tarfile.open(
        fileobj=raw, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape"
    ) as tf:
        for name, data in [("caf\udce9.jpg", img()), ("caf\udce9.json", js())] + good("ok"):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    del buf
    (path,) = write_shards(tmp_path / "in", {"s.tar": raw.getvalue()})
    res = convert([path], tmp_path / "out")
    assert res.filenames == ["s/ok.jpg"]
    line = res.reject("caf\\xe9.jpg")  # the byte shown as an escape; rejects.jsonl stays valid UTF-8 JSON
    assert line["reason"] == Reason.UNSAFE_MEMBER and "UTF-8" in line["detail"]


@pytest.mark.parametrize("mode", MODES)
def test_c1_control_characters_in_member_names_are_unsafe_like_c0_ones(tmp_path, mode):
    """U+0080-U+009F (C1: CSI U+009B starts a terminal escape sequence in one character) never name a file in OUT."""
    members = [*sample("csi\u009b2J"), *sample("nel\u0085x"), *sample("apc\u009f"), *good("ok")]
    (path,) = write_shards(tmp_path / "in", {"s.tar": tar_bytes(members, tarfile.PAX_FORMAT)})
    res = convert([path], tmp_path / "out", mode)
    assert res.filenames == ["s/ok.jpg"]
    for key in ("csi\u009b2J", "nel\u0085x", "apc\u009f"):
        for member in (f"{key}.jpg", f"{key}.json"):
            line = res.reject(member)
            assert line["reason"] == Reason.UNSAFE_MEMBER and "control character" in line["detail"], line
    assert sorted(p.name for p in (tmp_path / "out" / "data" / "s").iterdir()) == ["ok.jpg", "ok.txt"]


@pytest.mark.parametrize("mode", MODES)
def test_links_devices_fifos_and_directories_are_never_created(tmp_path, mode):
    target = tmp_path / "target"
    target.mkdir()
    members = [
        (special("sl.jpg", tarfile.SYMTYPE, "/etc/passwd"), None),
        ("sl.json", js()),
        (special("hl.jpg", tarfile.LNKTYPE, "ok.jpg"), None),
        ("hl.json", js()),
        (special("dev.png", tarfile.CHRTYPE), None),
        ("dev.json", js()),
        (special("blk.png", tarfile.BLKTYPE), None),
        (special("pipe.jpg", tarfile.FIFOTYPE), None),
        ("pipe.json", js()),
        (special("dir.jpg", tarfile.DIRTYPE), None),
        (special("out", tarfile.SYMTYPE, str(target)), None),  # a link to a folder outside ...
        ("out/x.jpg", img()),
        ("out/x.json", js()),  # ... then members "through" it
        *good("ok"),
    ]
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / "out", mode)
    assert not list(target.iterdir())  # the link was never created, so never followed
    assert sorted(res.filenames) == ["s/ok.jpg", "s/out/x.jpg"]
    assert (tmp_path / "out/data/s/out").is_dir() and not (tmp_path / "out/data/s/out").is_symlink()
    expect = {
        "sl.jpg": "symlink",
        "hl.jpg": "hardlink",
        "dev.png": "device",
        "blk.png": "device",
        "pipe.jpg": "fifo",
        "out": "symlink",
    }
    for member, word in expect.items():
        line = res.reject(member)
        assert line["reason"] == Reason.UNSAFE_MEMBER and word in line["detail"]
    for partner in ("sl.json", "hl.json", "dev.json", "pipe.json"):
        assert res.reasons(partner) == []  # covered by its image's line
    assert "no JSON member" in res.reject("blk.png")["detail"]
    assert not (tmp_path / "out/data/s/dir.jpg").exists()
    check_output(tmp_path / "out")


@pytest.mark.parametrize("mode", MODES)
def test_same_member_name_twice_keeps_the_first(tmp_path, mode):
    first, second = img(), img()
    members = [
        ("a.jpg", first),
        ("a.json", js()),
        ("a.jpg", second),
        ("b.jpg", first),
        ("b.jpg", second),
        ("b.json", js()),
        ("b.json", js(caption="other")),
    ]
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / "out", mode)
    assert res.filenames == ["s/a.jpg", "s/b.jpg"]
    assert (tmp_path / "out/data/s/a.jpg").read_bytes() == first
    assert (tmp_path / "out/data/s/b.jpg").read_bytes() == first
    assert res.reasons("a.jpg") == [Reason.DUPLICATE_MEMBER]
    assert res.reasons("b.jpg") == [Reason.DUPLICATE_MEMBER]
    assert res.reasons("b.json") == [Reason.DUPLICATE_MEMBER]
    assert res.rows[1]["caption"] == "a red fox in the snow"
    assert res.summary.exit_code == 0


@pytest.mark.parametrize("mode", MODES)
def test_output_paths_taken_by_another_member_are_rejected_not_fatal(tmp_path, mode):
    members = (
        good("a")
        + [
            ("a.jpg/b.jpg", img()),
            ("a.jpg/b.json", js()),  # folder where a file is
            ("c/d.jpg", img()),
            ("c/d.json", js()),
            ("c.d/x.jpg", img()),
            ("c.d/x.json", js()),
            ("a.txt/e.jpg", img()),
            ("a.txt/e.json", js()),
        ]
        + good("z")
    )
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / "out", mode)
    assert res.filenames == ["s/a.jpg", "s/c/d.jpg", "s/c.d/x.jpg", "s/z.jpg"]
    for member in ("a.jpg/b.jpg", "a.txt/e.jpg"):
        line = res.reject(member)
        assert line["reason"] == Reason.NAME_CLASH and "taken by another member" in line["detail"]
    assert res.result("s").ok and res.summary.exit_code == 0


def test_name_too_long_for_the_output_path_is_rejected_not_fatal(tmp_path):
    long_name = "/".join(["p" * 250] * 16) + "/long"  # 4020 bytes: a valid tar name, too long under OUT
    members = good("a") + [(f"{long_name}.jpg", img()), (f"{long_name}.json", js())] + good("z")
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / ("o" * 60) / "out")
    assert res.filenames == ["s/a.jpg", "s/z.jpg"]
    line = res.reject(f"{long_name}.jpg")
    assert line["reason"] == Reason.NAME_UNUSABLE and "File name too long" in line["detail"]
    assert res.result("s").ok and res.summary.exit_code == 0
    data = tmp_path / ("o" * 60) / "out" / "data"
    empty = [str(d.relative_to(data))[:40] for d in data.rglob("*") if d.is_dir() and not any(d.iterdir())]
    assert empty == []  # the folders made on the way to the name that failed are gone too


def test_name_over_4096_bytes_is_unsafe(tmp_path):
    long_name = "/".join(["p" * 250] * 17) + "/long"
    (path,) = write_shards(tmp_path / "in", {"s.tar": [(f"{long_name}.jpg", img()), (f"{long_name}.json", js())]})
    res = convert([path], tmp_path / "out")
    assert res.reject(f"{long_name}.jpg")["reason"] == Reason.UNSAFE_MEMBER
    assert "limit 4096" in res.reject(f"{long_name}.jpg")["detail"]


def test_same_image_name_in_two_shards_with_flat(tmp_path):
    first, second = img(), img()
    paths = write_shards(
        tmp_path / "in",
        {
            "s-1.tar": [("x.jpg", first), ("x.json", js(caption="first")), *good("only1")],
            "s-2.tar": [("x.jpg", second), ("x.json", js(caption="second")), *good("only2")],
        },
    )
    res = convert(paths, tmp_path / "out", flat=True)
    assert sorted(res.filenames) == ["only1.jpg", "only2.jpg", "x.jpg"]
    row = next(r for r in res.rows if r["filename"] == "x.jpg")
    assert row["shard"] == "s-1" and row["caption"] == "first"
    assert (tmp_path / "out/data/x.jpg").read_bytes() == first
    assert (tmp_path / "out/data/x.txt").read_text() == "first"
    line = res.reject("x.jpg")
    assert line["shard"] == "s-2" and line["reason"] == Reason.NAME_CLASH
    assert res.summary.exit_code == 0


def test_flat_name_blocked_by_another_shards_file_is_a_clash_not_a_crash(tmp_path):
    paths = write_shards(
        tmp_path / "in",
        {
            "s-1.tar": good("x", "q") + [("d.jpg/e.jpg", img()), ("d.jpg/e.json", js())],
            "s-2.tar": good(
                "x.jpg/y", "x.txt/z", "w", "d"
            ),  # folders where s-1 has files, a file where it has a folder
        },
    )
    res = convert(paths, tmp_path / "out", flat=True)
    assert res.filenames == ["x.jpg", "q.jpg", "d.jpg/e.jpg", "w.jpg"]
    for member in ("x.jpg/y.jpg", "x.txt/z.jpg", "d.jpg"):
        line = res.reject(member)
        assert line["shard"] == "s-2" and line["reason"] == Reason.NAME_CLASH
    assert res.summary.exit_code == 0
    again = convert(paths, tmp_path / "out", flat=True)  # resumable: nothing to redo, same answer
    assert again.filenames == res.filenames and again.rejects == res.rejects


# -- JSON -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_json_problems_each_get_a_reason(tmp_path, mode):
    cases = {
        "invalid": (b'{"short_caption": "a", ', Reason.JSON_INVALID, "invalid JSON"),
        "latin1": ('{"short_caption": "caf\xe9"}'.encode("latin-1"), Reason.JSON_INVALID, "not valid UTF-8: byte 0xe9"),
        "utf16": ('{"short_caption": "x"}'.encode("utf-16"), Reason.JSON_INVALID, "UTF-16"),
        "empty": (b"", Reason.JSON_INVALID, "empty"),
        "list": (b'["short_caption"]', Reason.JSON_NOT_OBJECT, "list"),
        "string": (b'"just a caption"', Reason.JSON_NOT_OBJECT, "str"),
        "int-caption": (js(caption=5, long_caption=...), Reason.NO_CAPTION, "short_caption: wrong type (int)"),
        "dict-caption": (js(caption={"en": "x"}), Reason.NO_CAPTION, "wrong type (dict)"),
        "empty-caption": (js(caption=""), Reason.NO_CAPTION, "short_caption: empty"),
        "blank-caption": (js(caption=" \n\t\u3000"), Reason.NO_CAPTION, "short_caption: empty"),
        "no-caption": (js(caption=...), Reason.NO_CAPTION, "short_caption: missing"),
    }
    members = []
    for key, (data, _, _) in cases.items():
        members += [(f"{key}.jpg", img()), (f"{key}.json", data)]
    members += [("bom.jpg", img()), ("bom.json", b"\xef\xbb\xbf" + js(caption="with a BOM"))]
    members += [("fallback.jpg", img()), ("fallback.json", js(caption="  ", long_caption="from the\nlong one"))]
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / "out", mode)
    assert res.filenames == ["s/bom.jpg", "s/fallback.jpg"]
    assert [r["caption"] for r in res.rows] == ["with a BOM", "from the long one"]
    for key, (_, reason, words) in cases.items():
        member = f"{key}.jpg" if reason == Reason.NO_CAPTION else f"{key}.json"
        line = res.reject(member)
        assert line["reason"] == reason and words in line["detail"], line
        other = f"{key}.json" if member.endswith(".jpg") else f"{key}.jpg"
        assert res.reasons(other) == []  # one line per rejected sample
        assert not (tmp_path / "out/data/s" / f"{key}.jpg").exists()


@pytest.mark.parametrize("mode", MODES)
def test_json_over_the_limit_is_rejected_and_never_read_whole(tmp_path, mode):
    big = b'{"short_caption": "' + b"x" * (24 << 20) + b'"}'
    members = good("a") + [("big.jpg", img()), ("big.json", big)] + good("z")
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    del big, members
    tracemalloc.start()
    try:
        res = convert([path], tmp_path / "out", mode)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.filenames == ["s/a.jpg", "s/z.jpg"]
    line = res.reject("big.json")
    assert line["reason"] == Reason.JSON_TOO_LARGE and "max_json_bytes=1048576" in line["detail"]
    assert res.reasons("big.jpg") == []
    assert peak < 8 << 20, f"peak traced memory {peak} bytes: the 24 MiB JSON was read"


def test_json_limit_is_configurable(tmp_path):
    members = [("a.jpg", img()), ("a.json", js(caption="c" * 300))] + good("b")
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / "out", max_json_bytes=200)
    assert res.filenames == ["s/b.jpg"]
    assert res.reject("a.json")["reason"] == Reason.JSON_TOO_LARGE


def png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\0\0\0\0IEND\xaeB`\x82"


@pytest.mark.parametrize("mode", MODES)
def test_width_height_not_usable(tmp_path, mode):
    values = {
        "text": ("wide", 48),
        "zero": (0, 48),
        "negative": (64, -48),
        "absurd": (70000, 48),
        "fraction": (64.5, 48),
        "bool": (True, 48),
        "list": ([64], 48),
        "half": (64, ...),
    }
    members = []
    for key, (w, h) in values.items():
        members += [(f"{key}.jpg", img()), (f"{key}.json", js(width=w, height=h))]  # header: 64x48
        members += [(f"{key}-bad.jpg", b"\xff\xd8\xff not really a jpeg"), (f"{key}-bad.json", js(width=w, height=h))]
    members += [("nosize.png", img("png", 30, 20)), ("nosize.json", js(width=..., height=...))]
    members += [("huge.png", png_header_only(70000, 10)), ("huge.json", js(width=..., height=...))]
    members += [
        ("trusted.jpg", b"\xff\xd8\xff a JPEG signature, no header"),
        ("trusted.json", js(width=640, height=480)),
    ]
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = (
        convert([path], tmp_path / "out", mode, images=False, captions=False)
        if mode == "stream-noimages"
        else convert([path], tmp_path / "out", mode)
    )
    sizes = {r["key"]: (r["width"], r["height"]) for r in res.rows}
    # an unusable JSON size falls back to the image header: the sample is kept, with a note
    assert {k: sizes[k] for k in values} == {k: (64, 48) for k in values}
    assert sizes["nosize"] == (30, 20) and sizes["trusted"] == (640, 480)
    notes = res.result("s").notes
    assert notes["json_size_invalid"] == len(values) and notes["size_from_header"] == len(values) + 1
    why = {
        "text": "width 'wide' is not a whole number",
        "zero": "width 0 is not positive",
        "negative": "height -48 is not positive",
        "absurd": "width 70000 is above 65535",
        "fraction": "width 64.5 is not a whole number",
        "bool": "width True is not a number",
        "list": "width [64] is not a number",
        "half": "height missing",
    }
    for key, words in why.items():
        line = res.reject(f"{key}-bad.jpg")  # header unreadable too: the JSON's problem is in the detail
        assert line["reason"] == Reason.SIZE_UNREADABLE and words in line["detail"], line
        assert "image header cannot be read" in line["detail"]
    line = res.reject("huge.png")
    assert (
        line["reason"] == Reason.SIZE_INVALID and "70000x10" in line["detail"] and "no width/height" in line["detail"]
    )


def test_width_height_fallback_when_streaming_without_images(tmp_path):
    members = [
        ("a.jpg", img(w=80, h=40)),
        ("a.json", js(width="?")),
        ("b.json", js(width=0)),
        ("b.png", img("png", 50, 70)),
        ("c.jpg", b"\xff\xd8\xff garbage"),
        ("c.json", js(width=...)),
    ]
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / "out", "stream", images=False)
    assert {r["key"]: (r["width"], r["height"]) for r in res.rows} == {"a": (80, 40), "b": (50, 70)}
    assert res.reject("c.jpg")["reason"] == Reason.SIZE_UNREADABLE


# -- pairing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_unpaired_members_and_unreadable_headers(tmp_path, mode):
    members = [
        ("lonely.jpg", img()),
        ("orphan.json", js()),
        ("bad.jpg", b"\xff\xd8\xff but not really"),
        ("bad.json", js(width=...)),
        *good("ok"),
        ("readme.txt", b"hello"),
    ]
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / "out", mode)
    assert res.filenames == ["s/ok.jpg"]
    assert res.reject("lonely.jpg")["reason"] == Reason.IMAGE_WITHOUT_JSON
    assert "no JSON member with key 'lonely' in this shard" in res.reject("lonely.jpg")["detail"]
    assert res.reject("orphan.json")["reason"] == Reason.JSON_WITHOUT_IMAGE
    assert res.reject("bad.jpg")["reason"] == Reason.SIZE_UNREADABLE
    assert res.result("s").notes.get("other_members") == 1
    assert res.summary.exit_code == 0


@pytest.mark.parametrize("mode", MODES)
def test_image_name_with_another_extension_goes_by_the_member(tmp_path, mode):
    members = [
        ("a.jpg", img()),
        ("a.json", js(image_name="a.png")),
        ("b.jpeg", img()),
        ("b.json", js(image_name="b.jpg")),
        ("c.png", img("png")),
        ("c.json", js(image_name="something-else.PNG")),
    ]
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / "out", mode)
    assert res.filenames == ["s/a.jpg", "s/b.jpeg", "s/c.png"] and res.rejects == []
    assert res.result("s").notes.get("image_name_ext_differs") == 1


@pytest.mark.parametrize("mode", MODES)
def test_members_of_a_sample_far_apart_still_pair(tmp_path, mode):
    keys = [f"k{i:03d}" for i in range(40)]
    members = [(f"{k}.jpg", img()) for k in keys] + [(f"{k}.json", js(caption=k)) for k in reversed(keys)]
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / "out", mode)
    assert res.rejects == [] and sorted(r["caption"] for r in res.rows) == keys


@pytest.mark.parametrize("mode", MODES)
def test_bounded_waiting_reports_what_never_paired(tmp_path, mode):
    keys = [f"k{i:02d}" for i in range(12)]
    members = [(f"{k}.jpg", img()) for k in keys] + [(f"{k}.json", js()) for k in keys] + good("near")
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / "out", mode, max_pending=5)
    converted = {r["key"] for r in res.rows}
    assert "near" in converted
    given_up = [k for k in keys if k not in converted]
    assert given_up  # 12 images waiting, only 5 may
    for k in given_up:
        image, partner = res.reject(f"{k}.jpg"), res.reject(f"{k}.json")
        assert image["reason"] == Reason.IMAGE_WITHOUT_JSON and "raise max_pending" in image["detail"]
        assert (
            partner["reason"] == Reason.JSON_WITHOUT_IMAGE
            and f"'{k}.jpg' came earlier and was given up" in partner["detail"]
        )
    # every member is accounted for: a row or a reject line
    assert len(converted) * 2 + len(res.rejects) == len(members)
    assert not list((tmp_path / "out/.dalle3-etl/staging").iterdir())


def test_pairing_memory_is_bounded_by_count_and_bytes():
    p = Pairing(max_pending=50, max_pending_bytes=10_000)
    reported = []
    for i in range(2000):
        done, problems = p.add(f"k{i}", "image", f"k{i}.jpg", None, weight=0)
        reported += problems
        assert len(p.pending) <= 50
    assert len(reported) == 1950
    p = Pairing(max_pending=10_000, max_pending_bytes=10_000)
    for i in range(100):
        _, problems = p.add(f"j{i}", "json", f"j{i}.json", None, weight=1000)
        assert p.pending_bytes <= 10_000
    assert len(p.pending) == 10 and p.evicted == 90
    _, (late,) = p.add("j0", "image", "j0.jpg", None)
    assert "j0.json" in late.why and "10000 bytes" in late.why


@pytest.mark.parametrize("mode", MODES)
def test_uppercase_extensions_and_names_with_extra_dots(tmp_path, mode):
    members = [
        ("UP.PNG", img("png")),
        ("UP.JSON", js()),
        ("mixed.JpEg", img()),
        ("mixed.Json", js()),
        ("v.1.2.final.jpg", img()),
        ("v.1.2.final.json", js()),
        ("dots..jpg", img()),
        ("dots..json", js()),
        ("dir.v2/img.jpg", img()),
        ("dir.v2/img.json", js()),
        ("named.jpg", img()),
        ("named.jpg.json", js()),
    ]  # the key is the name minus its LAST extension
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / "out", mode)
    assert res.filenames == ["s/UP.PNG", "s/mixed.JpEg", "s/v.1.2.final.jpg", "s/dots..jpg", "s/dir.v2/img.jpg"]
    assert (tmp_path / "out/data/s/UP.txt").exists() and (tmp_path / "out/data/s/v.1.2.final.txt").exists()
    assert res.reject("named.jpg")["reason"] == Reason.IMAGE_WITHOUT_JSON
    assert "key 'named.jpg'" in res.reject("named.jpg.json")["detail"]


def test_every_reason_is_documented():
    codes = {v for k, v in vars(Reason).items() if k.isupper()}
    assert codes == set(REASONS)
    assert all(REASONS[c] for c in codes)


def test_rejects_file_is_valid_json_lines(tmp_path):
    members = [("ctl\x01.jpg", img()), ("x.json", b"\xff\xfe"), *good("a")]
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / "out")
    raw = (tmp_path / "out/rejects.jsonl").read_bytes()
    assert raw.decode("utf-8") and all(orjson.loads(line)["shard"] == "s" for line in raw.splitlines())
    assert len(res.rejects) == 2


# -- exit codes ------------------------------------------------------------------------------------------


def _cli(*args: str):
    from typer.testing import CliRunner

    from dalle3_etl.cli import app

    return CliRunner().invoke(app, ["convert", *args])


def test_exit_0_when_every_shard_is_read_even_with_rejected_samples(tmp_path):
    (path,) = write_shards(
        tmp_path / "in",
        {
            "s.tar": good("a")
            + [("b.jpg", img()), ("b.json", js(caption=""))]
            + [(special("l.jpg", tarfile.SYMTYPE, "/etc/passwd"), None)]
        },
    )
    result = _cli(str(path), "-o", str(tmp_path / "out"), "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "rejected: no_caption" in result.output and "rejected: unsafe_member" in result.output


def test_exit_1_when_a_shard_is_damaged_and_the_others_are_kept(tmp_path):
    data = tar_bytes(good("a", "b"))
    paths = write_shards(tmp_path / "in", {"s-1.tar": data[:1500], "s-2.tar": good("c")})
    result = _cli(*map(str, paths), "-o", str(tmp_path / "out"), "--workers", "2")
    assert result.exit_code == 1, result.output
    assert "DAMAGED s-1" in result.output and "truncated" in result.output
    said = " ".join(result.output.split())
    assert "1 shard(s) could not be read completely (samples before the damage are kept): s-1" in said
    assert "nothing of them was committed" not in said
    rows = [r["filename"] for r in outcome_rows(tmp_path / "out")]
    assert rows == ["s-2/c.jpg"]
    # fixing the input and running again gives exit 0 (the damaged shard is redone: its input changed)
    paths[0].write_bytes(data)
    result = _cli(*map(str, paths), "-o", str(tmp_path / "out"), "--workers", "1")
    assert result.exit_code == 0, result.output
    assert [r["filename"] for r in outcome_rows(tmp_path / "out")] == ["s-1/a.jpg", "s-1/b.jpg", "s-2/c.jpg"]


def outcome_rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    check_output(out)
    return pq.read_table(out / "dalle3.parquet").to_pylist()


@pytest.mark.parametrize(
    "args, words",
    [
        (["{missing}"], "no such file"),
        (["{shard}", "--max-json-bytes", "1"], "--max-json-bytes 1: must be at least 2"),
        (["{shard}", "--workers", "many"], "Invalid value"),
        (["{shard}", "--caption-field", ""], '--caption-field "": must not be empty'),
    ],
)
def test_exit_2_on_usage_errors(tmp_path, args, words):
    (path,) = write_shards(tmp_path / "in", {"s.tar": good("a")})
    args = [a.format(missing=tmp_path / "nope.tar", shard=path) for a in args]
    result = _cli(*args, "-o", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert not (tmp_path / "out" / "dalle3.parquet").exists()


def test_exit_2_when_settings_conflict_with_the_existing_output(tmp_path):
    (path,) = write_shards(tmp_path / "in", {"s.tar": good("a")})
    assert _cli(str(path), "-o", str(tmp_path / "out"), "--workers", "1").exit_code == 0
    result = _cli(str(path), "-o", str(tmp_path / "out"), "--workers", "1", "--max-json-bytes", "500")
    assert result.exit_code == 2 and "max_json_bytes" in result.output
