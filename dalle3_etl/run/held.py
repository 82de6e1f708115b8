"""--dedup: the files of a shard's rows that a merge found to be duplicates are held back from OUT/data.

A worker writes every row's image and caption file into OUT/data/<shard>; only the merge, which sees the
shards in order, knows that a row repeats an earlier shard's sample. Its files are then moved to the state
folder (`OUT/.dalle3-etl/held/<shard>/`, laid out as under OUT/data/<shard>), not deleted: a later merge
may find the row a first occurrence again (the earlier shard holding its key was redone with other
content) and move them back. Each merge makes OUT/data agree with its decision, so one cut short by a
crash is completed by the next. Every move goes through `layout.fs`, and only names the shard's part lists.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dalle3_etl.settings import Settings
from dalle3_etl.shard.sinks import written_names
from dalle3_etl.store.fsio import Root
from dalle3_etl.store.layout import Layout


def hold_files(layout: Layout, settings: Settings, shard_id: str, members: list[str]) -> None:
    """Make OUT/data/<shard> hold the files of every row but `members` (the duplicates, named relative to the
    shard's folder), and the shard's held folder exactly theirs."""
    if not (settings.images or settings.captions):
        return
    data, held = layout.shard_data(shard_id), layout.held(shard_id)
    dups = {name for member in members for name in written_names(member, settings.images, settings.captions)}
    for name in sorted(dups):
        _move(layout.fs, data / name, held / name)
    if not held.is_dir() or held.is_symlink():
        return
    for name in sorted(_files_under(held) - dups):  # first occurrences again: back into OUT/data
        _move(layout.fs, held / name, data / name)
    if not dups:
        layout.fs.remove_tree(held)


def _files_under(root: Path) -> set[str]:
    found = set()
    for dirpath, _dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        found.update(prefix + name for name in filenames)
    return found


def _regular(path: Path) -> os.stat_result | None:
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _move(fs: Root, src: Path, dst: Path) -> None:
    """Move the tool's regular file `src` to `dst` (nothing there is replaced but the tool's own copy)."""
    src_st = _regular(src)
    if src_st is None:
        return  # moved by an earlier merge (or not a file the tool wrote: left alone)
    dst_st = _regular(dst)
    if dst_st is not None:
        # Both: a copy across file systems (OUT/data linked to another disk) was cut short by a crash.
        # The source stays whole until its copy is complete, so the larger of the two is whole.
        if dst_st.st_size >= src_st.st_size:
            fs.unlink(src)
            return
        fs.unlink(dst)
    fs.make_folders(dst.parent)
    fs.rename_new(src, dst)


__all__ = ["hold_files"]
