"""Shards on local disk: a file, a folder (its shards below, hidden names and OUT skipped), a glob."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from dalle3_etl.sources.base import SHARD_SUFFIXES, ShardSource, SourceError, shard_id_for


def local_source(path: Path) -> ShardSource:
    """A local shard, opened through the name given. The id comes from that name, not from where a link leads
    (a Hugging Face cache file ``snapshots/<rev>/data/data-000000.tar -> ../../blobs/<sha>`` is ``data-000000``).
    The fingerprint names the file itself (links resolved) with its size and mtime: a run resumes an output
    made before ids came from links, and a new snapshot linking the same blob is not converted again."""
    given = path.absolute()
    real = path.resolve()
    st = real.stat()
    return ShardSource(
        shard_id=shard_id_for(given.name),
        uri=str(given),
        size=st.st_size,
        fingerprint={"path": str(real), "size": st.st_size, "mtime_ns": st.st_mtime_ns},
    )


def _is_shard_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(SHARD_SUFFIXES)


def _shards_below(folder: Path, skip: tuple[int, int] | None = None) -> list[Path]:
    """Shard files below a folder, hidden names left out as a shell glob leaves them: macOS's `._data-000000.tar`
    resource forks, `.cache/` folders (the Hub's download cache) are no shards; links to folders not followed.
    `skip` (`base.folder_identity` of OUT): that folder below is not walked."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and not _is(os.path.join(dirpath, d), skip)]
        found.extend(p for name in filenames if not name.startswith(".") and _is_shard_file(p := Path(dirpath) / name))
    return found


def _is(path: str, identity: tuple[int, int] | None) -> bool:
    """Whether the folder `path` (not a link: os.walk follows none) is the one `identity` names."""
    if identity is None:
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == identity


def expand_local(arg: str, skip: tuple[int, int] | None = None) -> list[Path]:
    """The shard files a local argument names; `SourceError` naming the argument when it names none. `skip`: a
    folder below a folder argument that is not walked (OUT: `base.folder_identity`)."""
    path = Path(arg).expanduser()
    if path.is_dir():
        found = _shards_below(path, skip)
        if not found:
            raise SourceError(f"{arg}: directory contains no .tar shards")
        return found
    if path.is_file():
        return [path]
    if glob.has_magic(arg):
        found = [Path(p) for p in glob.glob(os.path.expanduser(arg), recursive=True)]
        found = [p for p in found if _is_shard_file(p)]
        if not found:
            raise SourceError(f"{arg}: pattern matches no .tar shards")
        return found
    raise SourceError(f"{arg}: no such file or directory")
