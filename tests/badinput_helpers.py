"""Helpers for the bad-input, fuzz and disk-full tests: hand-made shards, stream sources, output checks; tar meta
records (pax, GNU long names) for the tar reader's tests too."""

from __future__ import annotations

import io
import os
import random
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from dalle3_etl.devtools import synth
from dalle3_etl.run.pipeline import RunSummary, run_convert
from dalle3_etl.settings import Settings
from dalle3_etl.shard.samples import IMAGE_EXTENSIONS
from dalle3_etl.sources.base import ShardSource
from dalle3_etl.sources.local import local_source

IMAGE_SUFFIXES = {f".{ext}" for ext in IMAGE_EXTENSIONS}
_RNG = random.Random(1234)


def img(fmt: str = "jpeg", w: int = 64, h: int = 48, nbytes: int = 600) -> bytes:
    """A valid image whose header says w x h; unique bytes on every call."""
    return synth.make_image(fmt, w, h, nbytes, _RNG)


def js(caption="a red fox in the snow", **fields) -> bytes:
    obj = {"short_caption": caption, "width": 64, "height": 48}
    obj.update(fields)
    return orjson.dumps({k: v for k, v in obj.items() if v is not ...})


def sample(key: str, ext: str = "jpg", **fields) -> list[tuple[str, bytes]]:
    return [(f"{key}.{ext}", img("png" if ext.lower() == "png" else "jpeg")), (f"{key}.json", js(**fields))]


def tar_bytes(members, fmt: int = tarfile.GNU_FORMAT, tmp: Path | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in members:
            if isinstance(name, tarfile.TarInfo):
                ti = name
            else:
                ti = tarfile.TarInfo(name)
                ti.mtime, ti.mode = synth.TAR_MTIME, 0o644
            if data is None:
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def member_offsets(data: bytes) -> dict[str, tuple[int, int]]:
    """name -> (header offset, data offset) of each member, as tarfile sees them."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for ti in tf:
            out[ti.name] = (ti.offset, ti.offset_data)
    return out


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = linkname
    ti.mode = 0o644
    ti.mtime = synth.TAR_MTIME
    return ti


# -- sources that read as streams ---------------------------------------------------------------------


class _ReadOnly(io.RawIOBase):
    """A file seen through a non-seekable, read-only window (like an HTTP body)."""

    def __init__(self, path: str):
        self._fh = open(path, "rb")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buf) -> int:
        return self._fh.readinto(buf)

    def close(self) -> None:
        self._fh.close()
        super().close()


class StreamSource(ShardSource):
    """A local shard opened as a non-seekable stream: image bodies are streamed, not seeked over."""

    def open(self):
        return _ReadOnly(self.uri)


class PipeSource(ShardSource):
    """A local shard read through a real OS pipe (a thread writes it in)."""

    def open(self):
        rfd, wfd = os.pipe()

        def feed() -> None:
            with open(self.uri, "rb") as src, open(wfd, "wb") as dst:
                try:
                    while chunk := src.read(1 << 16):
                        dst.write(chunk)
                except BrokenPipeError:
                    pass

        threading.Thread(target=feed, daemon=True).start()
        return open(rfd, "rb", buffering=0)


MODES = ("file", "stream")


def source(path: Path, mode: str = "file") -> ShardSource:
    src = local_source(path)
    if mode == "file":
        return src
    cls = {"stream": StreamSource, "pipe": PipeSource}[mode]
    return cls(src.shard_id, src.uri, src.size, src.fingerprint)


# -- running and checking -----------------------------------------------------------------------------


@dataclass
class Outcome:
    out: Path
    summary: RunSummary
    rejects: list[dict]
    rows: list[dict]

    def reasons(self, member: str) -> list[str]:
        return [r["reason"] for r in self.rejects if r["member"] == member]

    def reject(self, member: str) -> dict:
        found = [r for r in self.rejects if r["member"] == member]
        assert len(found) == 1, (member, self.rejects)
        return found[0]

    @property
    def filenames(self) -> list[str]:
        return [r["filename"] for r in self.rows]

    def result(self, shard_id: str):
        return next(r for r in self.summary.results if r.shard_id == shard_id)


def write_shards(root: Path, shards: dict[str, list | bytes]) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, content in shards.items():
        path = root / name
        path.write_bytes(content if isinstance(content, bytes) else tar_bytes(content))
        paths.append(path)
    return paths


def convert(paths: list[Path], out: Path, mode: str = "file", **overrides) -> Outcome:
    settings = Settings(workers=1, **overrides)
    summary = run_convert([source(p, mode) for p in paths], out, settings)
    return outcome(out, summary)


def outcome(out: Path, summary: RunSummary) -> Outcome:
    rejects = [orjson.loads(line) for line in (out / "rejects.jsonl").read_bytes().splitlines()]
    rows = pq.read_table(out / "dalle3.parquet").to_pylist()
    check_output(out, rows)
    return Outcome(out, summary, rejects, rows)


def check_output(out: Path, rows: list[dict] | None = None) -> None:
    """The invariants SimpleTuner relies on: every image on disk has exactly one row and a .txt holding its
    caption; every row's image exists; no links, devices or fifos anywhere in OUT."""
    if rows is None:
        rows = pq.read_table(out / "dalle3.parquet").to_pylist()
    data = out / "data"
    names = [r["filename"] for r in rows]
    assert len(names) == len(set(names)), "a filename has two rows"
    on_disk = set()
    for dirpath, dirnames, filenames in os.walk(out):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            assert not os.path.islink(path), f"symlink in OUT: {path}"
            assert os.path.isdir(path) or os.path.isfile(path), f"special file in OUT: {path}"
            if Path(dirpath).is_relative_to(data) and os.path.isfile(path) and path.suffix.lower() in IMAGE_SUFFIXES:
                on_disk.add(str(path.relative_to(data)))
    if (out / ".dalle3-etl" / "manifest.json").exists():
        manifest = orjson.loads((out / ".dalle3-etl" / "manifest.json").read_bytes())
        images = manifest.get("settings", {}).get("images", True)
        captions = manifest.get("settings", {}).get("captions", True)
    else:  # pragma: no cover
        images = captions = True
    if images:
        assert on_disk == set(names), (sorted(on_disk ^ set(names)))[:5]
    for row in rows:
        if captions:
            txt = data / (os.path.splitext(row["filename"])[0] + ".txt")
            assert txt.read_text(encoding="utf-8") == row["caption"]
        assert row["caption"].strip() and "\n" not in row["caption"]
        assert row["width"] > 0 and row["height"] > 0


def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """Every path under root (not following links) with (size, mtime_ns); `skip` subtree left out."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip is not None and Path(dirpath) == skip.parent and skip.name in dirnames:
            dirnames.remove(skip.name)
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if skip is not None and path == skip:
                continue
            st = os.lstat(path)
            # folders: existence only (creating OUT changes its parent's mtime); files: size and mtime
            out[str(path)] = (
                (0, 0) if os.path.isdir(path) and not os.path.islink(path) else (st.st_size, st.st_mtime_ns)
            )
    return out


def part_rows(out: Path, shard_id: str) -> int:
    return pq.read_metadata(out / ".dalle3-etl" / "parts" / f"{shard_id}.parquet").num_rows


def pax_data(records) -> bytes:
    """pax records '<len> <key>=<value>\\n' for (key, value) byte pairs."""
    out = []
    for key, value in records:
        body = b" %s=%s\n" % (key, value)
        n = len(body) + 1
        while n != len(body) + len(str(n)):
            n = len(body) + len(str(n))
        out.append(b"%d%s" % (n, body))
    return b"".join(out)


def meta_record(type_: bytes, data: bytes) -> bytes:
    """A meta header (pax 'x'/'X'/'g', GNU 'L'/'K') and its data, padded to whole blocks."""
    ti = tarfile.TarInfo("././@LongLink" if type_ in (b"L", b"K") else "././@PaxHeader")
    ti.type = type_
    ti.size = len(data)
    return ti.tobuf(tarfile.USTAR_FORMAT) + data + bytes(-len(data) % 512)
