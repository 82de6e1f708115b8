"""`--link none`: the images stay in the input folder, and with `--captions-in-place` the only files the tool ever
writes into an input folder, the `<stem>.txt` caption beside each image.

- `record_input_folder` keeps the folder's absolute path in OUT's state (`input-folder`), so the entry, `verify`
  and `status` look for the images there (`input_folder`); an OUT made from one folder is refused another.
- `CaptionJournal`: a name taken already, by anything (looked up through the folder's descriptor, no link
  followed), is the sample's `name_clash` reject naming it, with no journal line. A free name gets one line
  naming it and the digest of its bytes in the unit's journal (`OUT/.dalle3-etl/in-place/<unit>.jsonl`,
  unbuffered: a SIGKILL loses no line) before the file is created new (O_EXCL, O_NOFOLLOW, below folders opened
  without following a link: `fsio.Root`). When the create still finds the name taken (a file put there between
  the look-up and the create), a second line takes the name back (`"created": false`): that file is not the
  tool's, nothing replaced, and the sample is a `name_clash` reject.
- `remove_unit_captions` (a unit redone, `--restart`) removes exactly the files its journal lists and did not take
  back, and only while they still hold the bytes the tool wrote (`Root.remove_files(contents=...)`): a file the
  tool did not create is never listed, one edited since stays. Then the journal goes.

Why a journal, not the unit's parquet part: a unit killed half-way has no readable part, but its caption files
are there; redone, its samples would all be `name_clash` rejects. With the journal they are removed first, so
a resumed run gives the same bytes in OUT and in the folder.
"""

from __future__ import annotations

import errno
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
        """Create `rel` (relative to the input folder) as `name` in the open folder `dir_fd`, listed first with the
        digest of `data`: FileExistsError when the name is taken (nothing replaced, and listed as not created)."""
        try:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:  # taken (a user's file, a link, a folder): not listed, so never removed
            raise FileExistsError(errno.EEXIST, "exists already, not replaced", os.fsdecode(rel))
        if self._fd < 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
            self._fd = os.open(self.path, flags, 0o644)
        # the bytes of orjson.dumps({"name": rel.hex(), "digest": ...}) + b"\n", without the dict (hex needs no escape)
        os.write(self._fd, b'{"name":"%s","digest":"%s"}\n' % (hexlify(rel), hexlify(content_digest(data))))
        try:
            self.root.create_new_at(dir_fd, name, data)
        except FileExistsError:
            # put there since the look-up: not the tool's, the line above is taken back
            os.write(self._fd, b'{"name":"%s","created":false}\n' % hexlify(rel))
            raise

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def unit_captions(layout: Layout, shard_id: str) -> dict[str, bytes] | None:
    """The caption files a unit's journal lists (less the names it took back): path relative to the input folder ->
    digest of the bytes the tool wrote (`content_digest`); None when the unit has no journal."""
    try:
        lines = layout.in_place(shard_id).read_bytes().splitlines()
    except FileNotFoundError:
        return None
    contents: dict[str, bytes] = {}
    for line in lines:
        try:
            item = orjson.loads(line)
            name = os.fsdecode(bytes.fromhex(item["name"]))
            if item.get("created") is False:
                contents.pop(name, None)  # the create found the name taken: that file is not the tool's
            else:
                contents[name] = bytes.fromhex(item["digest"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
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
