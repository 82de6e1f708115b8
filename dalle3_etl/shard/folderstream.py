"""The files of an extracted folder's unit as the member stream a tar gives: `FolderReader`, `open_members`.

`ShardConverter` reads a unit (`sources.folder.FolderUnit`) exactly as it reads a tar: it iterates `Member`s
(name = the file's path relative to the folder, `size`, a virtual `offset`), `read`s the current one, and the
writer later reads an image back by its offset (`pread`, `copy_range`) or, with ``link = "hard"``, has it linked
into OUT (`place`). So everything the pairing does with tar members (JSON, image and text members, duplicates,
partners missing) is done for folders by the same code.

Offsets are virtual: member k starts at the sum of the sizes before it, plus k (distinct even for empty files);
a bisect finds the file of an offset. Each file is opened once, relative to the folder's descriptor, never through
a symlink (``O_NOFOLLOW``; a symlink listed in the folder is a member with a problem and is never opened), and
read once: the image's descriptor stays open (up to `MAX_OPEN`) until its body is copied or linked.

A file that cannot be opened (unreadable, vanished since the listing, replaced by a link or a folder) is a member
with a problem and the reason `member_unreadable`; a file that changes while the unit is read is a `MemberChanged`
error, which rejects its sample (`sample_error`), never the unit.
"""

from __future__ import annotations

import bisect
import errno
import os
import stat

from dalle3_etl.settings import Settings
from dalle3_etl.shard.rows import Reason
from dalle3_etl.shard.tarbytes import NEW_FILE, copy_fd_range
from dalle3_etl.shard.tarcompress import open_tar
from dalle3_etl.shard.tarheader import Member, decode_name, resolve_name
from dalle3_etl.sources.folder import KIND_FILE, KIND_LINK, FolderUnit
from dalle3_etl.store.fsio import Root, would_remove
from dalle3_etl.store.inplace import CaptionJournal
from dalle3_etl.store.layout import Layout

MAX_OPEN = 64  # image descriptors kept open while their sample waits for its partner
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_LINK_FALLBACK = frozenset((errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP))


class MemberChanged(Exception):
    """An input file changed while its unit was read (not an OSError: it rejects the sample, not the unit)."""


class FolderMember(Member):
    """A `Member` with the reason its problem is rejected for (a tar's problems are all `unsafe_member`)."""

    __slots__ = ("reason",)

    def __init__(self, *args, reason: Reason = Reason.UNSAFE_MEMBER, **kwargs):
        super().__init__(*args, **kwargs)
        self.reason = reason


def open_members(src, fh, layout: Layout | None = None, settings: Settings | None = None):
    """The member stream of `src` opened as `fh`: a `FolderReader` for a folder's unit (its images hard-linked,
    symlinked or copied into `layout`'s OUT as `settings.link` says, or left where they are), else the tar reader."""
    if isinstance(src, FolderUnit):
        link = settings.link if settings is not None else "copy"
        reader = FolderReader(src, fh.fd, layout.fs if link in ("hard", "symlink") else None, symlink=link == "symlink")
        if link == "none" and settings.captions and settings.captions_in_place:
            reader.captions = CaptionJournal(layout, src.shard_id, Root(os.path.dirname(src.root)))
        fh.on_close = reader.close  # the image descriptors still open go with the folder's
        return reader
    return open_tar(fh)


def data_files(settings: Settings) -> tuple[bool, bool]:
    """(images, captions): whether images and caption files are written under OUT/data. With --link none
    neither is: the images stay in the input folder, and the caption files go beside them, if asked."""
    if settings.link == "none":
        return False, False
    return settings.images, settings.captions


class FolderReader:
    """Iterate the files of a unit as members; see the module doc. `link`: OUT's `Root`, through which `place`
    hard-links images (the writer asks `links`); `copied` counts the images copied because a link was refused."""

    seekable = True

    def __init__(self, unit: FolderUnit, dir_fd: int, link: Root | None = None, *, symlink: bool = False):
        self.unit = unit
        self.dir_fd = dir_fd
        self.links = link
        self.symlink = symlink  # `place` makes a symlink to the input file instead of a hard link
        self.captions: CaptionJournal | None = None  # --captions-in-place: `write_caption` writes there
        self.copied = 0
        self._starts: list[int] = []  # virtual offset of each opened file, increasing
        self._files: list[tuple[bytes, int, tuple[int, int]]] = []  # (relative path, size, (dev, ino))
        self._fds: dict[int, int] = {}  # index in _files -> open descriptor (insertion order: oldest first)
        self._next = 0  # virtual offset of the next member
        self._pos = 0
        self._cur = -1  # index of the current member in _files, -1: none to read
        self._cur_read = 0
        self._cur_size = 0
        self._sub: tuple[bytes, int] | None = None  # (relative path, descriptor) of the subfolder last opened

    @property
    def position(self) -> int:
        return self._pos

    def _at(self, rel: bytes) -> tuple[int, bytes]:
        """(descriptor of the folder holding `rel`, its last component). The folders on the way are opened one
        by one without following a symlink (one put there after the listing: ELOOP or ENOTDIR), the last
        one kept open for the next file of the same folder."""
        folder, _, name = rel.rpartition(b"/")
        if not folder:
            return self.dir_fd, name
        if self._sub is not None and self._sub[0] == folder:
            return self._sub[1], name
        fd = self.dir_fd
        try:
            for part in folder.split(b"/"):
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                if fd != self.dir_fd:
                    os.close(fd)
                fd = nxt
        except OSError:
            if fd != self.dir_fd:
                os.close(fd)
            raise
        self._close_sub()
        self._sub = (folder, fd)
        return fd, name

    def _close_sub(self) -> None:
        if self._sub is not None:
            os.close(self._sub[1])
            self._sub = None

    def __iter__(self):
        for rel, kind in self.unit.files():
            yield self.member(rel, kind)

    def member(self, rel: bytes, kind: bytes, plain: str | None = None) -> Member:
        """The next member: the file `rel` of the listing (`kind` as listed), opened unless it has a problem.
        `plain`: `rel` decoded, when the caller knows it is a plain name (`tarheader.is_plain_name`)."""
        self._cur = -1
        if plain is None:
            name, utf8_ok = decode_name(rel)
            name, problem = resolve_name(name, utf8_ok, "file")
        else:
            name, problem = plain, None
        offset = self._next
        if problem is not None:
            member = FolderMember(name, 0, offset, "file", problem=problem)
        elif kind == KIND_LINK:
            member = FolderMember(name, 0, offset, "symlink", problem="symbolic link in the input folder, not followed")
        elif kind != KIND_FILE:
            member = FolderMember(name, 0, offset, "other", problem="not a regular file (device, fifo or socket)")
        else:
            member = self._open(rel, name, offset)
        self._next += 1
        return member

    def read_whole(self, rel: bytes, name: str, limit: int) -> tuple[Member, bytes | None] | None:
        """The next member, a JSON file, read whole and closed at once: (its member, its bytes, None when it is over
        `limit` bytes: left unread). `rel` is listed as a regular file and `name` is its plain name. None, with
        nothing done, when it cannot be opened, is no longer a regular file or reads shorter than its size: then
        `member` opens it again and says why (the same reject, the same error, as for any member)."""
        try:
            fd = self._open_file(rel)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            size = st.st_size
            data = os.pread(fd, size, 0) if size <= limit else None
        finally:
            os.close(fd)
        if data is not None and len(data) != size:
            return None
        self._cur = -1
        offset = self._next
        self._next = offset + size + 1
        self._pos += size
        return Member(name, size, offset, "file"), data

    def release(self) -> None:
        """The current member is read to its end and not needed again (a JSON file): its descriptor is closed now."""
        self._done(self._cur)

    def _open(self, rel: bytes, name: str, offset: int) -> Member:
        try:
            fd = self._open_file(rel)
        except OSError as exc:
            why = "it was listed, then removed before it was read" if exc.errno == errno.ENOENT else exc.strerror
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                why = "it or a folder on its way became a symbolic link after the listing (not followed)"
            return FolderMember(
                name, 0, offset, "file", problem=f"cannot be read: {why}", reason=Reason.MEMBER_UNREADABLE
            )
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return FolderMember(
                name, 0, offset, "file", problem="no longer a regular file", reason=Reason.MEMBER_UNREADABLE
            )
        index = len(self._files)
        self._files.append((rel, st.st_size, (st.st_dev, st.st_ino)))
        self._starts.append(offset)
        self._fds[index] = fd
        while len(self._fds) > MAX_OPEN:
            os.close(self._fds.pop(next(iter(self._fds))))
        self._cur, self._cur_read, self._cur_size = index, 0, st.st_size
        self._next = offset + st.st_size
        self._pos += st.st_size
        return Member(name, st.st_size, offset, "file")

    def _open_file(self, rel: bytes) -> int:
        folder_fd, name = self._at(rel)
        return os.open(name, _OPEN_FLAGS, dir_fd=folder_fd)

    # -- reading -------------------------------------------------------------------------------------

    def read(self, n: int = -1) -> bytes:
        """Up to n (all remaining if n < 0) bytes of the current member."""
        cur = self._cur
        if cur < 0:
            return b""
        at = self._cur_read
        remaining = self._cur_size - at
        if n is None or n < 0 or n > remaining:
            n = remaining
        fd = self._fds.get(cur)
        data = os.pread(fd, n, at) if fd is not None else b""  # a small file: one call
        if len(data) < n:
            data += self._pread(cur, at + len(data), n - len(data))
        self._cur_read = at + len(data)
        return data

    def pread(self, offset: int, n: int) -> bytes:
        index = bisect.bisect_right(self._starts, offset) - 1
        if index < 0:
            return b""
        start = self._starts[index]
        size = self._files[index][1]
        return self._pread(index, offset - start, max(0, min(n, size - (offset - start))))

    def _pread(self, index: int, at: int, n: int) -> bytes:
        fd = self._fd(index)
        parts, got = [], 0
        while got < n:
            chunk = os.pread(fd, n - got, at + got)
            if not chunk:
                raise MemberChanged(f"{self._shown(index)} became shorter while it was read")
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def _fd(self, index: int) -> int:
        fd = self._fds.get(index)
        if fd is not None:
            return fd
        rel, _size, ident = self._files[index]
        try:
            fd = self._open_file(rel)
        except OSError as exc:
            raise MemberChanged(f"{self._shown(index)} cannot be opened again: {exc.strerror}") from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != ident:
            os.close(fd)
            raise MemberChanged(f"{self._shown(index)} was replaced by another file while it was read")
        self._fds[index] = fd
        return fd

    def _index(self, offset: int) -> int:
        index = bisect.bisect_right(self._starts, offset) - 1
        if index < 0 or self._starts[index] != offset:
            raise ValueError(f"no member starts at offset {offset}")
        return index

    def _shown(self, index: int) -> str:
        return repr(decode_name(self._files[index][0])[0])

    def _done(self, index: int) -> None:
        fd = self._fds.pop(index, None)
        if fd is not None:
            os.close(fd)

    def copy_range(self, offset: int, size: int, dst_fd: int) -> int:
        """Copy the member starting at `offset` (all its `size` bytes) to `dst_fd`; its descriptor is closed."""
        index = self._index(offset)
        try:
            done, _fast = copy_fd_range(self._fd(index), 0, size, dst_fd, lambda at, n: self._pread(index, at, n))
        finally:
            self._done(index)
        return done

    def place(self, offset: int, dst: str, created: list[str], size: int = -1) -> None:
        """The image starting at `offset` at `dst` (a new name: EEXIST otherwise), appended to `created` once it
        exists: hard-linked (symlinked with --link symlink), copied with --link copy or where the file system
        refuses the link. A file replaced since it was opened is never linked (`MemberChanged`). `size`: unused,
        the listing has it (the signature is `TarBytes.place`'s)."""
        index = self._index(offset)
        rel, size, ident = self._files[index]
        if self.links is None:
            self._copy_new(offset, size, dst, created)
            return
        if self.symlink:
            self.links.symlink_new(os.path.join(self.unit.root, os.fsdecode(rel)), dst)
            created.append(dst)
            self._done(index)
            return
        try:
            self.links.link_input(*self._at(rel), dst)
        except OSError as exc:
            if exc.errno not in _LINK_FALLBACK:
                raise
            self.copied += 1
            self._copy_new(offset, size, dst, created)
            return
        created.append(dst)
        self._done(index)
        st = os.lstat(dst)
        if (st.st_dev, st.st_ino) != ident:
            raise MemberChanged(f"{self._shown(index)} was replaced by another file while it was read")

    def _copy_new(self, offset: int, size: int, dst: str, created: list[str]) -> None:
        fd = os.open(dst, NEW_FILE | getattr(os, "O_CLOEXEC", 0), 0o644)
        created.append(dst)
        try:
            self.copy_range(offset, size, fd)
        finally:
            os.close(fd)

    def write_caption(self, offset: int, text: str) -> int:
        """--captions-in-place: `<stem>.txt` of the image starting at `offset`, created new beside it in the input
        folder (listed in the unit's journal first); FileExistsError naming it when that name is taken."""
        caption = self._caption_rel(offset)
        data = text.encode("utf-8")
        try:
            self.captions.create(*self._at(caption), rel=caption, data=data)
        except FileExistsError:
            raise _taken(caption) from None
        return len(data)

    def _caption_rel(self, offset: int) -> bytes:
        """`<stem>.txt` of the image starting at `offset`, relative to the input folder."""
        rel = self._files[self._index(offset)][0]
        return rel[: rel.rfind(b".")] + b".txt"

    def check_caption_free(self, offset: int, ours: dict[str, bytes]) -> None:
        """A dry run's `write_caption`: the FileExistsError it would raise, without creating anything. A file
        the unit's journal lists and that still holds the tool's bytes (`ours`: `inplace.unit_captions`) is not
        in the way: the real run removes it first (`commit.forget_shard`)."""
        caption = self._caption_rel(offset)
        dir_fd, name = self._at(caption)
        try:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not would_remove(dir_fd, name, ours.get(os.fsdecode(caption))):
            raise _taken(caption)

    def close(self) -> None:
        if self.captions is not None:
            self.captions.close()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._close_sub()


def _taken(caption: bytes) -> FileExistsError:
    """The error of a caption file whose name is taken in the input folder (the sample's `name_clash`)."""
    return FileExistsError(
        errno.EEXIST, f"{decode_name(caption)[0]!r} exists already in the input folder (not replaced)"
    )
