"""tarstream: held to tarfile's results on archives tarfile itself writes, plus damage and safety cases."""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import lzma
import os
import pickle
import random
import tarfile
import tracemalloc

import pytest
from badinput_helpers import meta_record, pax_data
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dalle3_etl.shard import tarbytes, tarheader
from dalle3_etl.shard.tarcompress import open_tar
from dalle3_etl.shard.tarstream import Member, TarFormatError, TarReader

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}
TYPE_KIND = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.LNKTYPE: "hardlink",
    tarfile.SYMTYPE: "symlink",
    tarfile.CHRTYPE: "chardev",
    tarfile.BLKTYPE: "blockdev",
    tarfile.DIRTYPE: "dir",
    tarfile.FIFOTYPE: "fifo",
}


# -- helpers ---------------------------------------------------------------------------------------


class OnlyRead:
    """A non-seekable stream: only .read(), and short reads like a pipe."""

    def __init__(self, data: bytes, max_chunk: int | None = None, seed: int = 0):
        self._bio = io.BytesIO(data)
        self._max = max_chunk
        self._rng = random.Random(seed)

    def read(self, n=-1):
        if self._max is not None and (n is None or n < 0 or n > self._max):
            n = self._rng.randint(1, self._max)
        return self._bio.read(n)


def make_tar(specs, fmt=tarfile.GNU_FORMAT, **kw) -> bytes:
    """specs: (name, data) for files or a ready TarInfo (data None) for other types."""
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=fmt, **kw) as tf:
        for spec in specs:
            if isinstance(spec, tarfile.TarInfo):
                tf.addfile(spec)
            else:
                name, data = spec
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                ti.mtime = 1700000000
                tf.addfile(ti, io.BytesIO(data))
    return bio.getvalue()


def info(name, type_, linkname=""):
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.linkname = linkname
    return ti


def tarfile_view(raw: bytes):
    out = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        for ti in tf:
            kind = TYPE_KIND.get(ti.type, "other")
            data = tf.extractfile(ti).read() if kind == "file" else b""
            out.append((ti.name, ti.size, ti.offset_data, kind, data))
    return out


def reader_view(reader: TarReader, piece: int | None = None):
    out = []
    for m in reader:
        assert isinstance(m, Member)
        if m.kind == "file":
            if piece is None:
                data = reader.read()
            else:
                chunks = []
                while chunk := reader.read(piece):
                    chunks.append(chunk)
                data = b"".join(chunks)
            assert reader.read() == b""
        else:
            data = b""
        out.append((m.name, m.size, m.offset, m.kind, data))
    return out


def fix_checksum(raw: bytearray, hoff: int) -> None:
    block = raw[hoff : hoff + 512]
    block[148:156] = b" " * 8
    raw[hoff + 148 : hoff + 156] = b"%06o\0 " % sum(block)


def offsets(raw: bytes):
    """(header offset, data offset, size, name) per member, from tarfile."""
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        return [(ti.offset, ti.offset_data, ti.size, ti.name) for ti in tf]


def collect(reader: TarReader):
    """Members yielded before an error, and the error."""
    got = []
    with pytest.raises(TarFormatError) as exc:
        for m in reader:
            got.append(m.name)
    return got, exc.value


def readers(raw: bytes, tmp_path, **kw):
    """The same archive as a real file (pread), BytesIO (seek/read), a pipe-like stream."""
    path = tmp_path / f"a{random.random()}.tar"
    path.write_bytes(raw)
    fh = open(path, "rb")
    yield "file", TarReader(fh, **kw)
    fh.close()
    yield "bytesio", TarReader(io.BytesIO(raw), **kw)
    yield "stream", TarReader(OnlyRead(raw, max_chunk=700), **kw)


def rnd(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def members_for(fmt_name: str):
    specs = [
        ("a/0001.json", b'{"caption": "x"}' * 90),
        ("a/0001.jpg", rnd(5000)),
        ("a/empty.txt", b""),
        ("a/s511", rnd(511, 2)),
        ("a/s512", rnd(512, 3)),
        ("a/s513", rnd(513, 4)),
        info("a/sub", tarfile.DIRTYPE),
        ("L" * 60 + "/" + "m" * 80 + ".jpg", rnd(700, 5)),
        ("données/画像-ü.jpg", rnd(1200, 6)),
        info("a/link", tarfile.SYMTYPE, "0001.jpg"),
        info("a/hard", tarfile.LNKTYPE, "a/0001.jpg"),
        info("a/fifo", tarfile.FIFOTYPE),
        info("a/chr", tarfile.CHRTYPE),
        info("a/blk", tarfile.BLKTYPE),
        ("a/0002.png", rnd(70000, 7)),
    ]
    if fmt_name != "ustar":
        specs += [
            ("p" * 200 + "/" + "q" * 200 + "/r.png", rnd(300, 8)),  # > 255 total: GNU longname / pax path
            ("x" * 120, rnd(10, 9)),  # > 100 chars, no '/' to split at
            (("ü" * 70 + "/") * 3 + "z.json", rnd(33, 10)),
        ]
    return specs


# -- equivalence with tarfile ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt_name", list(FORMATS))
def test_equivalence_with_tarfile(fmt_name, tmp_path):
    raw = make_tar(members_for(fmt_name), FORMATS[fmt_name])
    expected = tarfile_view(raw)
    assert len(expected) == len(members_for(fmt_name))
    for mode, reader in readers(raw, tmp_path):
        assert reader.seekable == (mode != "stream")
        assert reader_view(reader) == expected, mode


@pytest.mark.parametrize("fmt_name", list(FORMATS))
def test_partial_reads_and_unread_members(fmt_name, tmp_path):
    raw = make_tar(members_for(fmt_name), FORMATS[fmt_name])
    expected = tarfile_view(raw)
    for mode, reader in readers(raw, tmp_path):
        assert reader_view(reader, piece=333) == expected, mode
    # reading only some members (and only part of some) must not disturb the walk
    for mode, reader in readers(raw, tmp_path):
        got = []
        for i, m in enumerate(reader):
            if i % 3 == 1:
                reader.read(7)
            elif i % 3 == 2 and m.kind == "file":
                assert reader.read() == expected[i][4]
            got.append((m.name, m.size, m.offset, m.kind))
        assert got == [e[:4] for e in expected], mode


def test_global_pax_header_and_non_ascii_pax(tmp_path):
    raw = make_tar(
        [("ascii.json", b"{}"), ("ünï/cödé.jpg", rnd(100))],
        tarfile.PAX_FORMAT,
        pax_headers={"comment": "made by a test"},
    )
    for mode, reader in readers(raw, tmp_path):
        assert reader_view(reader) == tarfile_view(raw), mode


def test_copy_to_matches(tmp_path):
    raw = make_tar([("big.bin", rnd(3 * 1024 * 1024 + 17)), ("small", b"abc")])
    for mode, reader in readers(raw, tmp_path):
        outs = []
        for m in reader:
            buf = io.BytesIO()
            assert reader.copy_to(buf) == m.size
            assert reader.copy_to(buf) == 0
            outs.append(buf.getvalue())
        assert outs == [e[4] for e in tarfile_view(raw)], mode


def test_position_and_bounded_buffers(tmp_path):
    raw = make_tar(
        [(f"k/{i:04d}.{ext}", rnd(size, i)) for i in range(30) for ext, size in (("json", 1500), ("jpg", 300_000))]
    )
    for _mode, reader in readers(raw, tmp_path):
        last = 0
        for m in reader:
            assert m.offset - 512 <= reader.position + reader._start <= m.offset
            assert reader.position >= last
            last = reader.position
            assert len(reader._win) <= tarbytes.SEEK_WINDOW
            assert len(reader._sbuf) <= tarbytes.STREAM_CHUNK
        assert last < reader.position <= len(raw)


def test_seekable_mode_does_not_read_skipped_bodies(tmp_path, monkeypatch):
    raw = make_tar(
        [(f"k/{i:04d}.{ext}", rnd(size, i)) for i in range(20) for ext, size in (("json", 1500), ("jpg", 1_000_000))]
    )
    path = tmp_path / "big.tar"
    path.write_bytes(raw)
    real_pread = os.pread
    calls = []

    def counting_pread(fd, n, off):
        data = real_pread(fd, n, off)
        calls.append(len(data))
        return data

    monkeypatch.setattr(tarbytes.os, "pread", counting_pread)
    with open(path, "rb") as fh:
        reader = TarReader(fh)
        jsons = [reader.read() for m in reader if m.name.endswith(".json")]
    assert len(jsons) == 20 and all(len(j) == 1500 for j in jsons)
    assert sum(calls) < len(raw) // 20  # headers and JSON only
    assert len(calls) <= 2 * 20 + 2  # about one syscall per sample


@pytest.mark.parametrize("fmt_name", ["gnu", "pax"])
def test_base256_and_pax_size_over_8gib(fmt_name, tmp_path):
    big = 9 * 1024**3 + 5
    ti = tarfile.TarInfo("huge/0001.png")
    ti.size = big
    header = ti.tobuf(FORMATS[fmt_name])
    if fmt_name == "gnu":
        assert header[124] == 0x80  # base-256 size field
    raw = make_tar([("first.json", b"{}")])[:1024] + header + b"\0" * 4096
    for mode, reader in readers(raw, tmp_path):
        it = iter(reader)
        assert next(it).name == "first.json"
        if mode == "stream":
            m = next(it)
            assert (m.name, m.size) == ("huge/0001.png", big)
            with pytest.raises(TarFormatError) as exc:
                next(it)
        else:
            with pytest.raises(TarFormatError) as exc:
                next(it)
        assert exc.value.member == "huge/0001.png"
        assert f"needs {big} bytes" in str(exc.value)
        assert "truncated inside member 'huge/0001.png' data" in str(exc.value)


def test_v7_headers_and_signed_checksums(tmp_path):
    raw = bytearray(make_tar([("dir/", b""), ("dir/ü.bin", b"abc"), ("x.json", b"{}")], tarfile.USTAR_FORMAT))
    (h1, *_), (h2, *_), (h3, *_) = offsets(bytes(raw))
    raw[h1 + 156 : h1 + 157] = b"\0"  # v7 regular file whose name ends with '/': a directory
    for hoff in (h1, h2, h3):
        raw[hoff + 257 : hoff + 265] = bytes(8)  # v7: no magic
        fix_checksum(raw, hoff)
    block = raw[h2 : h2 + 512]
    block[148:156] = b" " * 8
    signed = sum(b - 256 if b > 127 else b for b in block)
    raw[h2 + 148 : h2 + 156] = b"%06o\0 " % signed  # some old tars wrote signed sums
    raw = bytes(raw)
    expected = tarfile_view(raw)
    assert [e[3] for e in expected] == ["dir", "file", "file"]
    for mode, reader in readers(raw, tmp_path):
        assert reader_view(reader) == expected, mode


def test_nti_matches_tarfile():
    for field in (
        b"0000644\0",
        b"   17 \0",
        b"\0" * 8,
        b"00000001750\0",
        b"\x80" + (9 * 1024**3).to_bytes(11, "big"),
        b"\xff" + b"\xff" * 10 + b"\xfe",
    ):
        assert tarheader.nti(field) == tarfile.nti(field)
    with pytest.raises(ValueError):
        tarheader.nti(b"12x4\0")


# -- hypothesis: random member lists ---------------------------------------------------------------

component = st.text(alphabet="abcxyz019_-éü画", min_size=1, max_size=40).map(lambda s: s + ".b")
entry = st.tuples(
    st.lists(component, min_size=1, max_size=8).map("/".join),
    st.one_of(st.integers(0, 1100), st.sampled_from([511, 512, 513, 1024])),
    st.sampled_from(["file", "file", "file", "dir", "symlink"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=st.lists(entry, max_size=12), fmt_name=st.sampled_from(list(FORMATS)), seed=st.integers(0, 99))
def test_hypothesis_equivalence(entries, fmt_name, seed):
    specs = []
    for i, (name, size, kind) in enumerate(entries):
        if kind == "file":
            specs.append((name, rnd(size, seed + i)))
        else:
            specs.append(info(name, tarfile.DIRTYPE if kind == "dir" else tarfile.SYMTYPE, "target"))
    try:
        raw = make_tar(specs, FORMATS[fmt_name])
    except ValueError:  # ustar cannot store the name
        assume(False)
    expected = tarfile_view(raw)
    assert reader_view(TarReader(io.BytesIO(raw))) == expected
    assert reader_view(TarReader(OnlyRead(raw, max_chunk=1 + seed * 37))) == expected


# -- damage ----------------------------------------------------------------------------------------


def three_members() -> bytes:
    return make_tar([("s/0001.json", rnd(1500, 1)), ("s/0001.jpg", rnd(4000, 2)), ("s/0002.json", rnd(1000, 3))])


def test_empty_file(tmp_path):
    for mode, reader in readers(b"", tmp_path):
        got, err = collect(reader)
        assert got == [] and err.offset == 0 and "empty file" in str(err), mode


def test_empty_archive_is_fine(tmp_path):
    raw = make_tar([])
    for mode, reader in readers(raw, tmp_path):
        assert list(reader) == [], mode


def test_not_a_tar(tmp_path):
    for junk in (b"\xff\xd8\xff\xe0" + rnd(3000), b"hello world\n" * 100, gzip.compress(three_members())):
        for mode, reader in readers(junk, tmp_path):
            got, err = collect(reader)
            assert got == [] and err.offset == 0, mode
            assert "not a tar archive" in str(err)
    _, err = collect(TarReader(io.BytesIO(gzip.compress(three_members()))))
    assert "gzip" in str(err)


@pytest.mark.parametrize("damage", ["checksum", "garbage"])
def test_bad_header_after_good_members(damage, tmp_path):
    raw = bytearray(three_members())
    (_, _, _, _), (_, _, _, name2), (h3, _, _, _) = offsets(bytes(raw))
    if damage == "checksum":
        raw[h3 + 3] ^= 0x01
    else:
        raw[h3 : h3 + 512] = rnd(512, 42)
    for mode, reader in readers(bytes(raw), tmp_path):
        got, err = collect(reader)
        assert got == ["s/0001.json", "s/0001.jpg"], mode
        assert err.offset == h3
        assert "bad header checksum" in str(err) and repr(name2) in str(err) and str(h3) in str(err)


def test_eof_inside_header(tmp_path):
    raw = three_members()
    h3 = offsets(raw)[2][0]
    for mode, reader in readers(raw[: h3 + 100], tmp_path):
        got, err = collect(reader)
        assert got == ["s/0001.json", "s/0001.jpg"], mode
        assert err.offset == h3 and "truncated inside header" in str(err) and "'s/0001.jpg'" in str(err)


def test_eof_inside_member_data(tmp_path):
    raw = three_members()
    _, d2, size2, name2 = offsets(raw)[1]
    cut = raw[: d2 + 10]
    for mode, reader in readers(cut, tmp_path):
        got, err = collect(reader)
        if mode == "stream":  # a stream cannot know before reading
            assert got == ["s/0001.json", name2]
        else:  # detected before yielding the member
            assert got == ["s/0001.json"]
        assert err.member == name2
        msg = str(err)
        assert f"truncated inside member {name2!r} data (needs {size2} bytes at offset {d2}" in msg, msg
        assert f"ends at {len(cut)}" in msg
    # the stream reports it from read() when the caller reads the body
    reader = TarReader(OnlyRead(cut, max_chunk=300))
    it = iter(reader)
    next(it)
    assert next(it).name == name2
    with pytest.raises(TarFormatError) as exc:
        reader.read()
    assert exc.value.member == name2 and exc.value.offset == len(cut)


def test_eof_at_header_boundary_without_end_marker(tmp_path):
    raw = three_members()
    _, d3, size3, _ = offsets(raw)[2]
    cut = raw[: d3 + (size3 + 511) // 512 * 512]
    for mode, reader in readers(cut, tmp_path):
        got, err = collect(reader)
        assert got == ["s/0001.json", "s/0001.jpg", "s/0002.json"], mode
        assert "archive ends without end-of-archive marker; truncated?" in str(err)
        assert err.offset == len(cut) and "'s/0002.json'" in str(err)


def test_eof_inside_padding(tmp_path):
    raw = three_members()
    _, d3, size3, _ = offsets(raw)[2]
    for mode, reader in readers(raw[: d3 + size3 + 3], tmp_path):
        got, err = collect(reader)
        assert got == ["s/0001.json", "s/0001.jpg", "s/0002.json"], mode
        assert "padding after member 's/0002.json'" in str(err)


def test_single_zero_block_then_eof_is_accepted(tmp_path):
    raw = three_members()
    _, d3, size3, _ = offsets(raw)[2]
    end = d3 + (size3 + 511) // 512 * 512
    for mode, reader in readers(raw[: end + 512], tmp_path):
        assert [m.name for m in reader] == ["s/0001.json", "s/0001.jpg", "s/0002.json"], mode


def test_lone_zero_block_followed_by_data(tmp_path):
    raw = three_members()
    h2 = offsets(raw)[1][0]
    damaged = raw[:h2] + bytes(512) + raw[h2:]
    for mode, reader in readers(damaged, tmp_path):
        got, err = collect(reader)
        assert got == ["s/0001.json"], mode
        assert "lone zero block" in str(err) and err.offset == h2


def test_meta_record_over_limit(tmp_path):
    long = "d/" + "n" * 250 + ".json"
    raw = make_tar([("ok.json", b"{}"), (long, b"{}")], tarfile.GNU_FORMAT)
    for mode, reader in readers(raw, tmp_path, max_meta_bytes=200):
        got, err = collect(reader)
        assert got == ["ok.json"], mode
        assert "GNU long-name record" in str(err) and "200" in str(err) and "'ok.json'" in str(err)
    raw = make_tar([("ok.json", b"{}"), ("ü" * 150, b"{}")], tarfile.PAX_FORMAT)
    for mode, reader in readers(raw, tmp_path, max_meta_bytes=100):
        got, err = collect(reader)
        assert got == ["ok.json"] and "pax header" in str(err), mode


# -- meta records are capped in total: per member (a chain) and per archive (global headers) ---------


def insert_before(raw: bytes, index: int, blocks: bytes) -> bytes:
    """`raw` with `blocks` inserted right before member number `index` (its first header)."""
    hoff = offsets(raw)[index][0]
    return raw[:hoff] + blocks + raw[hoff:]


def three_jsons() -> bytes:
    return make_tar([("ok.json", b"{}"), ("b.json", b"{}"), ("c.json", b"{}")], tarfile.USTAR_FORMAT)


def meta_data(type_: bytes, name: bytes) -> bytes:
    return name + b"\0" if type_ in (b"L", b"K") else pax_data([(b"path", name)])


@pytest.mark.parametrize("kinds", ["xxxx", "LLLL", "xXLK"])
def test_meta_records_before_one_member_are_capped_in_total(kinds, tmp_path):
    types = [k.encode() for k in kinds]
    datas = [meta_data(t, b"n%d/" % i + b"p" * 1400 + b".json") for i, t in enumerate(types)]
    chain = b"".join(meta_record(t, d) for t, d in zip(types, datas))
    raw = insert_before(three_jsons(), 1, chain)
    cap = 4000  # each record alone fits; the third brings the chain over
    third = offsets(three_jsons())[1][0] + sum(512 + len(d) + (-len(d) % 512) for d in datas[:2])
    for mode, reader in readers(raw, tmp_path, max_meta_bytes=cap):
        got, err = collect(reader)
        assert got == ["ok.json"], mode
        total = sum(map(len, datas[:3]))
        assert f"before one member to {total} bytes, more than the {cap} allowed" in str(err)
        assert "'ok.json'" in str(err) and err.offset == third
    # under a cap that holds the chain, the member gets its name from it (pax path over GNU long name)
    name = [d for t, d in zip(types, datas) if t in (b"x", b"X")] or [d for t, d in zip(types, datas) if t == b"L"]
    expected = pax_data_path(name[-1])
    for mode, reader in readers(raw, tmp_path, max_meta_bytes=6000):
        assert [m.name for m in reader] == ["ok.json", expected, "c.json"], mode


def pax_data_path(data: bytes) -> str:
    """The name a `meta_data` record carries."""
    if data.endswith(b"\0"):
        return data[:-1].decode()
    return data[data.index(b"=") + 1 : -1].decode()


def test_a_long_chain_of_pax_headers_is_refused_with_bounded_memory(tmp_path):
    cap = 64 << 10
    data = pax_data((b"k%05d" % i, b"v") for i in range(5000))  # ~60 KiB of small records, each a new key
    assert cap // 2 < len(data) <= cap
    raw = insert_before(three_jsons(), 1, meta_record(b"x", data) * 40)
    for mode, reader in readers(raw, tmp_path, max_meta_bytes=cap):
        tracemalloc.start()
        try:
            got, err = collect(reader)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert got == ["ok.json"] and "before one member" in str(err), mode
        assert peak < 4 * cap, (mode, peak)  # the 40 headers hold 100 times that many records


def test_global_headers_are_capped_over_the_whole_archive(tmp_path):
    data = pax_data([(b"comment", b"c" * 1500)])
    g = meta_record(b"g", data)
    raw = make_tar([(f"m{i}.json", b"{}") for i in range(5)], tarfile.USTAR_FORMAT)
    for i in (3, 2, 1):  # one global header before each of members 1-3: each chain holds one
        raw = insert_before(raw, i, g)
    for mode, reader in readers(raw, tmp_path, max_meta_bytes=4000):
        got, err = collect(reader)
        assert got == ["m0.json", "m1.json", "m2.json"], mode
        assert f"pax global headers of the archive to {3 * len(data)} bytes, more than the 4000 allowed" in str(err)
        assert "'m2.json'" in str(err)
    for mode, reader in readers(raw, tmp_path, max_meta_bytes=5000):
        assert [m.name for m in reader] == [f"m{i}.json" for i in range(5)], mode


def count_fast_path(monkeypatch) -> list[str]:
    """Make `TarReader._next_plain` note the names it gives (the fast path taken) in the list returned."""
    hits: list[str] = []
    fast = TarReader._next_plain

    def counting(self):
        member = fast(self)
        if member is not None:
            hits.append(member.name)
        return member

    monkeypatch.setattr(TarReader, "_next_plain", counting)
    return hits


@pytest.mark.parametrize("honoured", [False, True], ids=["nothing-honoured", "sparse-in-force"])
def test_a_large_global_header_is_not_carried_to_every_member(honoured, tmp_path, monkeypatch):
    records = [(b"comment", b"c" * 200_000)] + [(b"k%06d" % i, b"v") for i in range(50_000)]
    if honoured:
        records.append((b"GNU.sparse.major", b"1"))
    big = pax_data(records)
    assert 800_000 < len(big) < 1 << 20  # within the default cap
    files = [(f"d/{i:04d}.json", b"{}") for i in range(200)]
    raw = insert_before(make_tar(files, tarfile.USTAR_FORMAT), 0, meta_record(b"g", big))
    expected = tarfile_view(make_tar(files, tarfile.USTAR_FORMAT))
    hits = count_fast_path(monkeypatch)
    for mode, reader in readers(raw, tmp_path):
        got = [(m.name, m.size, m.offset - len(meta_record(b"g", big)), m.kind, m.problem) for m in reader]
        assert got == [
            (n, s, o, k, "sparse member (not supported)" if honoured else None) for n, s, o, k, _ in expected
        ], mode
        # what is kept of the header is the presence of the one record that is honoured, not the header
        assert reader._global_pax == ({tarheader.SPARSE: b""} if honoured else {}), mode
    # a header with nothing honoured in it leaves the fast path open; one with a record in force closes it
    # (the first member comes through the general path, which reads the global header before it)
    assert set(hits) == (set() if honoured else {name for name, _ in files[1:]})


def pax_tar_with_record(record: bytes) -> tuple[bytes, int]:
    """A pax tar whose second member's pax header data starts with the given record (same length)."""
    raw = bytearray(make_tar([("ok.json", b"{}"), ("ü.jpg", b"x")], tarfile.PAX_FORMAT))
    h2 = offsets(bytes(raw))[1][0]
    assert raw[h2 + 156 : h2 + 157] == b"x"
    data = h2 + 512
    rec_len = int(raw[data : raw.index(b" ", data)])
    assert len(record) == rec_len
    raw[data : data + rec_len] = record
    return bytes(raw), h2


@pytest.mark.parametrize(
    "record",
    [b"13 path\x00\xc3\xbc.jpg\n", b"99 path=\xc3\xbc.jpg\n", b"1x path=\xc3\xbc.jpg\n", b"13 path=\xc3\xbc.jpgX"],
)
def test_malformed_pax_records(record, tmp_path):
    raw, h2 = pax_tar_with_record(record)
    for mode, reader in readers(raw, tmp_path):
        got, err = collect(reader)
        assert got == ["ok.json"], mode
        assert "malformed pax record" in str(err) and "'ok.json'" in str(err)
        assert err.offset == h2 + 512


def test_pax_header_then_end_marker(tmp_path):
    raw = make_tar([("ok.json", b"{}"), ("ü.jpg", b"x")], tarfile.PAX_FORMAT)
    _, d2, _, _ = offsets(raw)[1]
    damaged = raw[: d2 - 512] + bytes(4096)
    for mode, reader in readers(damaged, tmp_path):
        got, err = collect(reader)
        assert got == ["ok.json"] and "member it describes is missing" in str(err), mode


def test_error_pickles():
    err = TarFormatError("truncated inside member 'a' data", offset=5, member="a")
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.message, back.offset, back.member) == (str(err), err.message, 5, "a")


# -- safety ----------------------------------------------------------------------------------------

UNSAFE = {
    "/etc/passwd.jpg": "absolute",
    "C:/x.jpg": "absolute",
    "c:x.jpg": "absolute",
    "a/../b.jpg": "'..'",
    "../b.jpg": "'..'",
    "a/..": "'..'",
    "a\\b.jpg": "backslash",
    "a\x01b.jpg": "control",
    "a\nb.jpg": "control",
    "a\x7fb.jpg": "control",
    "/".join(["d" * 200] * 21): "4096",
    "\udcff\udcfe.jpg": "UTF-8",
    "": "empty",
}


@pytest.mark.parametrize("fmt_name", ["gnu", "pax"])
def test_unsafe_names(fmt_name, tmp_path):
    # a component over 255 bytes is the file system's limit, not the tar's: only writing it can fail
    long_component = "a/" + "c" * 256 + "/" + "é" * 200 + ".jpg"
    specs = [("ok.json", b"{}")] + [(name, b"data") for name in UNSAFE] + [(long_component, b"")]
    raw = make_tar(specs, FORMATS[fmt_name])
    for mode, reader in readers(raw, tmp_path):
        got = {m.name: m.problem for m in reader}
        assert got.pop("ok.json") is None
        assert got.pop(long_component) is None
        for name, word in UNSAFE.items():
            assert got[name] is not None and word in got[name], (mode, name, got[name])


def test_link_device_fifo_and_other_members(tmp_path):
    odd = info("vol", b"V")
    specs = [
        info("l", tarfile.SYMTYPE, "../../etc/passwd"),
        info("h", tarfile.LNKTYPE, "ok.json"),
        info("c", tarfile.CHRTYPE),
        info("b", tarfile.BLKTYPE),
        info("f", tarfile.FIFOTYPE),
        info("d/", tarfile.DIRTYPE),
        info("../up/", tarfile.DIRTYPE),
        odd,
        ("ok.json", b"{}"),
    ]
    raw = make_tar(specs)
    for mode, reader in readers(raw, tmp_path):
        got = [(m.name, m.kind, m.problem, m.linkname) for m in reader]
        assert got == [
            ("l", "symlink", "symlink member", "../../etc/passwd"),
            ("h", "hardlink", "hardlink member", "ok.json"),
            ("c", "chardev", "device member", ""),
            ("b", "blockdev", "device member", ""),
            ("f", "fifo", "fifo member", ""),
            ("d", "dir", None, ""),
            ("../up", "dir", None, ""),  # directories carry no problem: the caller ignores them
            ("vol", "other", "unsupported member type 'V'", ""),
            ("ok.json", "file", None, ""),
        ], mode


def test_name_normalisation(tmp_path):
    raw = make_tar([info("./", tarfile.DIRTYPE), ("./a/b.jpg", b"1"), ("a//c.json", b"2"), ("./x/./y.png", b"3")])
    for mode, reader in readers(raw, tmp_path):
        assert [(m.name, m.kind, m.problem) for m in reader] == [
            (".", "dir", None),
            ("a/b.jpg", "file", None),
            ("a/c.json", "file", None),
            ("x/y.png", "file", None),
        ], mode


def test_pax_path_with_dotdot_is_caught(tmp_path):
    ti = tarfile.TarInfo("benign.jpg")
    ti.size = 3
    ti.pax_headers = {"path": "../../evil.jpg"}
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(ti, io.BytesIO(b"abc"))
    raw = bio.getvalue()
    assert b"benign.jpg" in raw[:2048]
    assert tarfile_view(raw)[0][0] == "../../evil.jpg"
    for mode, reader in readers(raw, tmp_path):
        (m,) = list(reader)
        assert m.name == "../../evil.jpg" and "'..'" in m.problem, mode


def test_gnu_longname_records_are_not_members(tmp_path):
    long = "deep/" + "n" * 180 + ".jpg"
    longlink = "t" * 150
    raw = make_tar([("a.json", b"{}"), (long, b"img"), info("ln", tarfile.SYMTYPE, longlink)], tarfile.GNU_FORMAT)
    assert b"././@LongLink" in raw
    for mode, reader in readers(raw, tmp_path):
        got = [(m.name, m.linkname) for m in reader]
        assert got == [("a.json", ""), (long, ""), ("ln", longlink)], mode


# -- random access ---------------------------------------------------------------------------------


def test_pread_does_not_disturb_iteration(tmp_path):
    raw = make_tar([("a.json", rnd(1500, 1)), ("a.jpg", rnd(90_000, 2)), ("b.json", rnd(1500, 3))])
    expected = tarfile_view(raw)
    for mode, reader in readers(raw, tmp_path):
        if mode == "stream":
            break
        seen = []
        for m in reader:
            if m.name == "b.json":
                first = expected[1]
                assert reader.pread(first[2], first[1]) == first[4]
                assert reader.pread(first[2] + first[1] - 5, 100) == first[4][-5:] + bytes(95)
            seen.append(reader.read())
        assert seen == [e[4] for e in expected], mode


def test_random_access_needs_seekable():
    reader = TarReader(OnlyRead(three_members()))
    with pytest.raises(io.UnsupportedOperation):
        reader.pread(0, 10)
    with pytest.raises(io.UnsupportedOperation):
        reader.copy_range(0, 10, 1)


def copy_all(reader, tmp_path, tag):
    outs = []
    for i, m in enumerate(reader):
        path = tmp_path / f"{tag}-{i}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"HEAD")
            assert reader.copy_range(m.offset, m.size, fd) == m.size
            if m.size > 10:
                assert reader.copy_range(m.offset + 3, 7, fd) == 7
        finally:
            os.close(fd)
        outs.append(path.read_bytes())
    return outs


def test_copy_range_fast_path_and_fallback_agree(tmp_path, monkeypatch):
    raw = make_tar([("big.bin", rnd(3 * 1024 * 1024 + 100, 1)), ("a.json", rnd(1500, 2)), ("empty", b"")])
    path = tmp_path / "c.tar"
    path.write_bytes(raw)
    expected = [b"HEAD" + e[4] + (e[4][3:10] if len(e[4]) > 10 else b"") for e in tarfile_view(raw)]
    with open(path, "rb") as fh:
        fast = copy_all(TarReader(fh), tmp_path, "fast")
    monkeypatch.setattr(tarbytes, "USE_COPY_FILE_RANGE", False)
    with open(path, "rb") as fh:
        slow = copy_all(TarReader(fh), tmp_path, "slow")
    assert fast == slow == expected
    assert copy_all(TarReader(io.BytesIO(raw)), tmp_path, "bio") == expected  # no fd: pread/write loop


@pytest.mark.skipif(not hasattr(os, "copy_file_range"), reason="no copy_file_range here")
def test_copy_range_falls_back_on_exdev(tmp_path, monkeypatch):
    raw = make_tar([("big.bin", rnd(2 * 1024 * 1024 + 3, 1)), ("a.json", rnd(1500, 2))])
    path = tmp_path / "c.tar"
    path.write_bytes(raw)
    calls = []

    def exdev(*args, **kw):
        calls.append(args)
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(tarbytes, "USE_COPY_FILE_RANGE", True)
    monkeypatch.setattr(tarbytes.os, "copy_file_range", exdev)
    with open(path, "rb") as fh:
        out = copy_all(TarReader(fh), tmp_path, "x")
    assert out == [b"HEAD" + e[4] + e[4][3:10] for e in tarfile_view(raw)]
    assert len(calls) == 1  # remembered for the rest of the archive


def test_copy_range_past_end_raises(tmp_path):
    raw = three_members()
    path = tmp_path / "c.tar"
    path.write_bytes(raw)
    with open(path, "rb") as fh, open(tmp_path / "out", "wb") as out:
        reader = TarReader(fh)
        with pytest.raises(TarFormatError):
            reader.copy_range(len(raw) - 10, 100, out.fileno())


# -- compressed input ------------------------------------------------------------------------------


def test_open_tar_gzip_stream(tmp_path):
    plain = make_tar(members_for("pax"), tarfile.PAX_FORMAT)
    expected = tarfile_view(plain)
    path = tmp_path / "a.tar.gz"
    path.write_bytes(gzip.compress(plain))
    with open(path, "rb") as fh:
        reader = open_tar(fh)
        assert not reader.seekable
        assert reader_view(reader) == expected
    reader = open_tar(OnlyRead(gzip.compress(plain), max_chunk=1000))
    assert not reader.seekable and reader_view(reader) == expected
    with tarfile.open(tmp_path / "b.tgz", "w:gz") as tf:  # written by tarfile itself
        tf.add(path, arcname="inner/a.tar.gz")
    with open(tmp_path / "b.tgz", "rb") as fh, open_tar(fh) as reader:
        (m,) = list(reader)
        assert m.name == "inner/a.tar.gz" and reader.position > 0


@pytest.mark.parametrize("compress", [bz2.compress, lzma.compress])
def test_open_tar_other_compressions(compress):
    plain = three_members()
    assert reader_view(open_tar(io.BytesIO(compress(plain)))) == tarfile_view(plain)


def test_open_tar_plain_keeps_sniffed_bytes(tmp_path):
    raw = three_members()
    expected = tarfile_view(raw)
    reader = open_tar(OnlyRead(raw, max_chunk=3))
    assert not reader.seekable and reader_view(reader) == expected
    path = tmp_path / "p.tar"
    path.write_bytes(raw)
    with open(path, "rb") as fh:
        reader = open_tar(fh)
        assert reader.seekable and reader_view(reader) == expected


def test_open_tar_zstd_is_explained():
    with pytest.raises(TarFormatError, match="zstd"):
        open_tar(io.BytesIO(b"\x28\xb5\x2f\xfd" + bytes(100)))


def test_real_pipe_stream_skips_large_unread_bodies():
    import threading

    raw = make_tar(
        [
            (f"k/{i}.{ext}", rnd(size, i))
            for i in range(3)
            for ext, size in (("json", 1500), ("jpg", 2 * 1024 * 1024 + 99))
        ]
    )
    expected = [e for e in tarfile_view(raw)]
    rfd, wfd = os.pipe()

    def feed():
        with open(wfd, "wb") as w:
            w.write(raw)

    t = threading.Thread(target=feed)
    t.start()
    try:
        with open(rfd, "rb") as fh:
            reader = open_tar(fh)
            assert not reader.seekable
            got = [(m.name, m.size, m.offset, reader.read() if m.name.endswith(".json") else None) for m in reader]
    finally:
        t.join()
    assert got == [(e[0], e[1], e[2], e[4] if e[0].endswith(".json") else None) for e in expected]


# -- the seekable fast path (`_next_plain`) gives what the general path gives ------------------------


def _members(raw: bytes, tmp_path) -> list[tuple]:
    path = tmp_path / f"fp{random.random()}.tar"
    path.write_bytes(raw)
    with open(path, "rb") as fh:
        reader = TarReader(fh)
        out = []
        for m in reader:
            data = reader.read(64) if m.kind == "file" else b""
            out.append((m.name, m.size, m.offset, m.kind, m.linkname, m.problem, data))
        return out


@pytest.mark.parametrize("fmt_name", list(FORMATS))
def test_fast_path_matches_general_path(fmt_name, tmp_path, monkeypatch):
    tricky = [
        ("./dot/0001.json", b"{}"),
        ("a/.hidden.jpg", rnd(10)),
        ("sp ace/x,y=z@1.jpg", rnd(600, 11)),
        ("c:drive.jpg", rnd(3)),
        ("back\\slash.jpg", rnd(3)),
        ("../up.jpg", rnd(3)),
        ("/abs.jpg", rnd(3)),
        info("v7/", tarfile.DIRTYPE),
        ("tab\tname.json", b"{}"),
        ("big/0003.png", rnd(20000, 12)),
    ]
    raw = make_tar(members_for(fmt_name) + tricky, FORMATS[fmt_name])
    hits = count_fast_path(monkeypatch)
    with_fast = _members(raw, tmp_path)
    assert "a/0001.json" in hits and "big/0003.png" in hits  # plain names do take the fast path ...
    assert not {"a/.hidden.jpg", "../up.jpg", "/abs.jpg", "back\\slash.jpg", "dot/0001.json"} & set(hits)
    monkeypatch.setattr(TarReader, "_next_plain", lambda self: None)
    assert with_fast == _members(raw, tmp_path)  # ... and give exactly what the general path gives
