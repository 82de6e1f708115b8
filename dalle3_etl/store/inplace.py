"""`--link none`: the images stay in the input folder, and with `--captions-in-place` the only files the tool ever
writes into an input folder, the `<stem>.txt` caption beside each image.

- `record_input_folder` keeps the folder's absolute path in OUT's state (`input-folder`), so the entry, `verify`
  and `status` look for the images there (`input_folder`); an OUT made from one folder is refused another.
- `CaptionJournal`: before a caption file is created, one line naming it and the digest of its bytes is written
  to the unit's journal (`OUT/.dalle3-etl/in-place/<unit>.jsonl`, unbuffered: a SIGKILL loses no line). Every
  file is created new (O_EXCL, O_NOFOLLOW, below folders opened without following a link: `fsio.Root`); a name
  taken already, by anything, is the sample's `name_clash` reject naming it, nothing replaced.
- `remove_unit_captions` (a unit redone, `--restart`) removes exactly the files its journal lists, and only while
  they still hold the bytes the tool wrote (`Root.remove_files(contents=...)`): a user's file of that name (the
  journal line was written, then the create failed) or one edited since stays. Then the journal goes.

Why a journal, not the unit's parquet part: a unit killed half-way has no readable part, but its caption files
are there; redone, its samples would all be `name_clash` rejects. With the journal they are removed first, so
a resumed run gives the same bytes in OUT and in the folder.
"""

from __future__ import annotations

import os
from binascii import hexlify
from pathlib import Path

import orjson

from dalle3_etl.errors import UsageError
from dalle3_etl.store.fsio import Root, content_digest
from dalle3_etl.store.layout import Layout


def record_input_folder(layout: Layout, folder: str) -> None:
    """Keep `folder` (resolved) as where this output's images are; refuses another folder than the one kept."""
    folder = os.path.realpath(folder)
    kept = input_folder(layout)
    if kept is not None and kept != Path(folder):
        raise UsageError(
            f"{layout.out} was made with --link none from {kept}; it cannot take {folder} too "
            "(use another output folder, or --restart)"
        )
    if kept is None:
        layout.fs.write_atomic(layout.input_folder_file, os.fsencode(folder))


def input_folder(layout: Layout) -> Path | None:
    """The input folder a `--link none` output's images are in, None for any other output."""
    try:
        return Path(os.fsdecode(layout.input_folder_file.read_bytes()))
    except (FileNotFoundError, NotADirectoryError):
        return None


class CaptionJournal:
    """The caption files one unit writes into the input folder `root` (a `Root`); see the module doc."""

    def __init__(self, layout: Layout, shard_id: str, root: Root):
        self.path = layout.in_place(shard_id)
        self.root = root
        self._fd = -1

    def create(self, dir_fd: int, name: bytes, *, rel: bytes, data: bytes) -> None:
        """List `rel` (relative to the input folder) with the digest of `data`, then create it as `name` in the
        open folder `dir_fd`: FileExistsError when the name is taken (nothing replaced)."""
        if self._fd < 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
            self._fd = os.open(self.path, flags, 0o644)
        # the bytes of orjson.dumps({"name": rel.hex(), "digest": ...}) + b"\n", without the dict (hex needs no escape)
        os.write(self._fd, b'{"name":"%s","digest":"%s"}\n' % (hexlify(rel), hexlify(content_digest(data))))
        self.root.create_new_at(dir_fd, name, data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def unit_captions(layout: Layout, shard_id: str) -> dict[str, bytes] | None:
    """The caption files a unit's journal lists: path relative to the input folder -> digest of the bytes the tool
    wrote (`content_digest`); None when the unit has no journal."""
    try:
        lines = layout.in_place(shard_id).read_bytes().splitlines()
    except FileNotFoundError:
        return None
    contents: dict[str, bytes] = {}
    for line in lines:
        try:
            item = orjson.loads(line)
            contents[os.fsdecode(bytes.fromhex(item["name"]))] = bytes.fromhex(item["digest"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a line cut by a crash: its file was not created yet
    return contents


def remove_unit_captions(layout: Layout, shard_id: str) -> int:
    """Remove the caption files a unit's journal lists (still holding what the tool wrote), then the journal.
    Returns the number of files removed."""
    path = layout.in_place(shard_id)
    contents = unit_captions(layout, shard_id)
    if contents is None:
        return 0
    folder = input_folder(layout)
    removed = 0
    if folder is not None and folder.is_dir():
        # a Root above the folder: remove_files takes a folder strictly below its root (the recorded path is
        # resolved, so not a link itself)
        removed = Root(folder.parent).remove_files(folder, sorted(contents), prune=False, contents=contents)
    layout.fs.unlink(path)
    return removed


def forget_input_folder(layout: Layout) -> None:
    """--restart: the caption files of units no record names any more (their journals), then the folder kept."""
    journals = layout.in_place("x").parent
    if journals.is_dir():
        for path in sorted(journals.glob("*.jsonl")):
            remove_unit_captions(layout, path.name[: -len(".jsonl")])
        layout.fs.remove_empty_folder(journals)
    layout.fs.unlink(layout.input_folder_file)


__all__ = [
    "forget_input_folder",
    "CaptionJournal",
    "input_folder",
    "record_input_folder",
    "remove_unit_captions",
    "unit_captions",
]
