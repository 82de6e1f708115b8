"""What a shard leaves in OUT, and taking it back: its folder moved in, its files listed by its part, removed.

Every removal goes through `store.fsio` and only names the tool wrote: a shard's folder `OUT/data/<shard>` is
the tool's once its claim (or record) says so, and even then only the files its part lists are removed; a
`--flat` shard's files in OUT/data are those it published (the same inode, or no staged copy left).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pyarrow.parquet as pq

from dalle3_etl.settings import Settings
from dalle3_etl.shard.sinks import written_names
from dalle3_etl.store.inplace import remove_unit_captions
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.manifest import pinned_settings


def forget_shard(layout: Layout, shard_id: str, settings: Settings) -> None:
    """Remove every trace of a shard (record first), including files a --flat shard already published.

    `settings` are those the shard was converted with (the output's pinned settings): they say which
    files each row stands for. Only those files are removed; a user's file in the shard's folder stays,
    and so does the folder then. A folder `OUT/data/<shard>` the tool did not create is never touched."""
    fs = layout.fs
    owned = layout.owns_shard_data(shard_id)  # before the record goes: an output older than claims
    fs.unlink(layout.record(shard_id))
    remove_unit_captions(layout, shard_id)  # --captions-in-place: what it wrote in the input folder
    if settings.flat:
        unpublish_flat(layout, shard_id, settings)
    elif owned and os.path.lexists(layout.shard_data(shard_id)):
        filenames = part_filenames(layout, shard_id)
        if filenames is not None:
            prefix = f"{shard_id}/"
            fs.remove_files(
                layout.shard_data(shard_id),
                [
                    name[len(prefix) :]
                    for f in filenames
                    for name in written_names(f, settings.images, settings.captions)
                    if name.startswith(prefix)
                ],
                symlinks=pinned_settings(layout).get("link") == "symlink",  # the links are the tool's files
            )
        # else: the files cannot be listed; the folder stays and the next commit says so
    if not os.path.lexists(layout.shard_data(shard_id)):
        fs.unlink(layout.claim(shard_id))
    fs.remove_tree(layout.staging(shard_id))
    fs.unlink(layout.part(shard_id))
    fs.unlink(layout.rejects(shard_id))
    fs.remove_tree(layout.flat_files(shard_id))
    fs.unlink(layout.dups(shard_id))  # --dedup: its repeats, and its files a merge held back as duplicates
    fs.remove_tree(layout.held(shard_id))


def part_filenames(layout: Layout, shard_id: str) -> list[str] | None:
    """The `filename` column of a shard's part, committed or still staged (a commit cut short), or None."""
    for path in (layout.part(shard_id), layout.staged_part(shard_id)):
        try:
            return pq.read_table(path, columns=["filename"]).column("filename").to_pylist()
        except (OSError, ValueError):  # missing, or not a readable parquet (ArrowInvalid is a ValueError)
            continue
    return None


def move_in_shard_files(layout: Layout, shard_id: str, staged: Path) -> None:
    """Move a shard's staged folder to `OUT/data/<shard>`, never over anything that is not the tool's.

    The claim (`owned/<shard>`) is written before the folder appears, so the folder is known to be the
    tool's from then on. A folder of that name the tool did not create fails the shard with a message."""
    fs = layout.fs
    target = layout.shard_data(shard_id)
    if not os.path.lexists(target):
        fs.write_atomic(layout.claim(shard_id), b"")
        if staged.exists():
            fs.rename_new(staged, target)
        else:
            target.mkdir()
    elif not layout.owns_shard_data(shard_id) or not target.is_dir() or target.is_symlink():
        raise FileExistsError(
            errno.EEXIST,
            f"{target} exists and was not written by dalle3-etl (it has the name of "
            f"shard {shard_id}); move or rename it, then run again",
            str(target),
        )
    elif staged.exists():
        fs.merge_new(staged, target)  # the tool's folder, still holding a user's files


def unpublish_flat(layout: Layout, shard_id: str, settings: Settings) -> None:
    """Remove the files a flat shard moved into OUT/data (before that shard is redone).

    A name still staged under flat/<shard> was not published by this shard (not yet, or it clashed
    with another shard's file, which stays), unless both names are the same file (a crash between
    link and unlink).
    """
    part = layout.part(shard_id)
    if not part.exists():
        return
    src_root = layout.flat_files(shard_id)
    published = []
    for filename in pq.read_table(part, columns=["filename"]).column("filename").to_pylist():
        for name in written_names(filename, settings.images, settings.captions):
            src, dst = src_root / name, layout.data / name
            if not src.exists() or same_file(src, dst):
                published.append(name)
    # OUT/data's folders may be the user's: files only, no folder removed
    layout.fs.remove_files(layout.data, published, prune=False)


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (FileNotFoundError, NotADirectoryError):
        return False
