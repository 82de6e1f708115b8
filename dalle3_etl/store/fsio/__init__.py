"""The one module that deletes, moves or overwrites anything: what the tool did not create is never touched.

Every such operation goes through a `Root` (OUT, or a folder the tool downloads into) and is refused
(`OwnershipError`) unless:

- the path is strictly inside the root, compared on absolute paths without resolving symlinks;
- no symlink is followed on the way: each folder between the root and the path is a real folder. The one
  exception is a top-level folder the root allows to be a link (OUT's `data`: a user may keep the images on
  another disk and link them in). Writes and removals go *through* that link, never *to* it;
- what is removed is a regular file or a real folder; a symlink is neither removed nor followed.

Which names the tool created is the caller's knowledge (a shard's files are the rows of its part, the
state folder is the tool's, the root's own file names are fixed); `remove_files` removes exactly the names
it is given and only the folders that are empty afterwards, so a user's file beside them survives.

Moves that must not replace anything (`rename_new`, `link_new`, `move_new`, `set_aside`) fail with
FileExistsError when the target exists (`set_aside` then takes the next free name) and fall back to copying when
the target is on another file system (OUT/data linked to another disk). A file the tool fills piece by piece is
created new (`open_new`: O_EXCL, O_NOFOLLOW); `replace` renames only the tool's own file, never a symlink.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from dalle3_etl.errors import EtlError
from dalle3_etl.store.fsio.fds import (
    _CLOEXEC,
    _DIR_FLAGS,
    _NOFOLLOW,
    _copy_file_new,
    _copy_tree_new,
    _holds,
    _makedirs,
    _open_below,
    _rmdir_if_empty,
    _write_all,
    content_digest,
)


class OwnershipError(EtlError):
    """A delete, move or overwrite was refused: outside the root, through a symlink, or not the tool's. An
    `EtlError`: a command that meets one ends with its one line (exit 1), never a traceback; in a worker it
    fails that shard only."""


class Root:
    """A folder the tool writes into; every delete, move and overwrite below it goes through here."""

    def __init__(self, path: str | os.PathLike, *, link_ok: Iterable[str] = ()):
        self.path = Path(os.path.abspath(path))
        self.link_ok = frozenset(link_ok)

    def __repr__(self) -> str:
        return f"Root({str(self.path)!r})"

    # -- checks ------------------------------------------------------------------------------------

    def parts(self, path: str | os.PathLike) -> list[str]:
        """The components of `path` below the root; refuses the root itself and anything outside it."""
        full = os.path.abspath(path)
        root = str(self.path)
        if not full.startswith(root.rstrip(os.sep) + os.sep):
            raise OwnershipError(f"refused: {full} is not inside {root}")
        parts = full[len(root.rstrip(os.sep)) + 1 :].split(os.sep)
        if not parts or "" in parts or "." in parts or ".." in parts:
            raise OwnershipError(f"refused: {full} is not a plain path inside {root}")
        return parts

    def check(self, path: str | os.PathLike) -> str:
        """`path` as an absolute string, once every folder on the way is known not to be a symlink.

        A missing folder on the way is fine (there is nothing to touch below it)."""
        parts = self.parts(path)
        cur = str(self.path)
        for i, part in enumerate(parts[:-1]):
            cur = os.path.join(cur, part)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                break
            if stat.S_ISLNK(st.st_mode):
                if i == 0 and part in self.link_ok:
                    continue
                raise OwnershipError(f"refused: {cur} is a symlink (never followed)")
            if not stat.S_ISDIR(st.st_mode):
                break  # the operation fails on its own (ENOTDIR)
        return os.path.abspath(path)

    def make_folders(self, path: str | os.PathLike) -> None:
        """Make the folder `path` and the missing folders on its way, each a real folder below the root: a
        symlink on the way is refused (OwnershipError; OUT's `data` link excepted), never made through, so
        nothing is created outside the root; a file on the way is NotADirectoryError."""
        parts = self.parts(path)
        cur = str(self.path)
        for i, part in enumerate(parts):
            cur = os.path.join(cur, part)
            try:
                os.mkdir(cur)
                continue
            except FileExistsError:
                st = os.lstat(cur)
            if stat.S_ISLNK(st.st_mode):
                if i == 0 and part in self.link_ok:
                    continue
                raise OwnershipError(f"refused: {cur} is a symlink (never followed)")
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "a file is in the way", cur)

    def _no_link(self, full: str) -> os.stat_result | None:
        """lstat of the path itself (None when missing); refuses a symlink there."""
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            raise OwnershipError(f"refused: {full} is a symlink the tool did not create (left as it is)")
        return st

    # -- removing ----------------------------------------------------------------------------------

    def unlink(self, path: str | os.PathLike, *, same_as: os.stat_result | None = None) -> bool:
        """Remove a regular file the tool created. True if it was there. `same_as` (the `os.fstat` of the file
        the tool created there): refused unless that very file is still under the name."""
        full = self.check(path)
        st = self._no_link(full)
        if st is None:
            return False
        if stat.S_ISDIR(st.st_mode):
            raise OwnershipError(f"refused: {full} is a folder, expected a file")
        _same_file(full, st, same_as)
        try:
            os.unlink(full)
        except FileNotFoundError:
            return False
        return True

    def remove_tree(self, path: str | os.PathLike) -> bool:
        """Remove a folder the tool created whole (staging, state folders) or a file. True if it was there.

        Iterative (a tree thousands of folders deep is removed like any other); a symlink inside the tree is
        removed as a link, never followed; a symlink at the top is refused."""
        full = self.check(path)
        st = self._no_link(full)
        if st is None:
            return False
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(full)
            return True
        stack = [full]
        while stack:
            folder = stack[-1]
            subfolders = []
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        subfolders.append(entry.path)
                    else:
                        os.unlink(entry.path)
            if subfolders:
                stack.extend(subfolders)  # emptied first; then this folder is scanned once more, empty
            else:
                os.rmdir(folder)
                stack.pop()
        return True

    def remove_empty_folder(self, path: str | os.PathLike) -> bool:
        """Remove a folder the tool made if it is empty now; False when it holds something (or is missing)."""
        full = self.check(path)
        st = self._no_link(full)
        if st is None or not stat.S_ISDIR(st.st_mode):
            return False
        try:
            os.rmdir(full)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.EBUSY):
                return False
            raise
        return True

    def remove_files(
        self,
        base: str | os.PathLike,
        relpaths: Iterable[str],
        *,
        prune: bool = True,
        symlinks: bool = False,
        contents: Mapping[str, bytes] | None = None,
    ) -> int:
        """Remove the regular files `base/<relpath>` the tool wrote, then (with `prune`, for a folder the tool
        created whole) every folder on their way, up to and including `base`, that is empty afterwards. Each
        folder is opened component by component without following symlinks, so nothing outside `base` is
        reached whatever was put there; anything that is not a regular file under a listed name is left alone.
        `symlinks` (--link symlink: the listed names are links the tool made): a symlink under a listed name
        is removed as a link, never followed, its target untouched. `contents` (relpath -> `content_digest` of
        the bytes the tool wrote there): a file is removed only if it still holds exactly those bytes (in a
        folder that is not the tool's, a user's file of that name stays). Returns the number of files removed."""
        full = self.check(base)
        base_st = self._no_link(full)
        if base_st is None or not stat.S_ISDIR(base_st.st_mode):
            return 0
        by_folder: dict[str, list[str]] = {}
        for rel in relpaths:
            folder, _, name = rel.rpartition("/")
            if name and name not in (".", "..") and not {"", ".", ".."} & set(folder.split("/") if folder else ()):
                by_folder.setdefault(folder, []).append(name)
        removed = 0
        base_fd = os.open(full, _DIR_FLAGS | _NOFOLLOW)
        try:
            for folder, names in by_folder.items():
                fd = _open_below(base_fd, folder)
                if fd is None:
                    continue
                try:
                    for name in names:
                        try:
                            st = os.lstat(name, dir_fd=fd)
                        except (FileNotFoundError, NotADirectoryError):
                            continue
                        if stat.S_ISLNK(st.st_mode) and symlinks:
                            os.unlink(name, dir_fd=fd)  # the link itself: unlink never follows the last component
                            removed += 1
                        elif stat.S_ISREG(st.st_mode):  # a symlink or folder under that name is not the tool's
                            rel = f"{folder}/{name}" if folder else name
                            if contents is not None and not _holds(fd, name, st, contents.get(rel)):
                                continue
                            os.unlink(name, dir_fd=fd)
                            removed += 1
                finally:
                    if fd != base_fd:
                        os.close(fd)
            # folders left empty, deepest first (each prefix of a listed folder)
            folders = {"/".join(f.split("/")[:i]) for f in by_folder if f for i in range(1, f.count("/") + 2)}
            if not prune:
                folders = set()
            for folder in sorted(folders, key=lambda f: f.count("/"), reverse=True):
                parent, _, name = folder.rpartition("/")
                pfd = _open_below(base_fd, parent)
                if pfd is None:
                    continue
                try:
                    _rmdir_if_empty(name, pfd)
                finally:
                    if pfd != base_fd:
                        os.close(pfd)
        finally:
            os.close(base_fd)
        if prune:
            _rmdir_if_empty(full, None)  # `base` itself, when nothing else is left in it
        return removed

    # -- moving and overwriting ----------------------------------------------------------------------

    def replace(self, src: str | os.PathLike, dst: str | os.PathLike) -> None:
        """Atomically rename the tool's `src` over `dst`, which must be absent or a file the tool owns
        (a regular file: a symlink or folder there is refused, never replaced)."""
        s, d = self.check(src), self.check(dst)
        src_st = self._no_link(s)  # a symlink there is not the tool's file: never renamed
        st = self._no_link(d)
        if st is not None and stat.S_ISDIR(st.st_mode) and not (src_st and stat.S_ISDIR(src_st.st_mode)):
            raise OwnershipError(f"refused: {d} is a folder, expected a file")
        os.replace(s, d)

    def move_new(
        self, src: str | os.PathLike, dst: str | os.PathLike, *, same_as: os.stat_result | None = None
    ) -> None:
        """Move the tool's regular file `src` to the new name `dst` in the same folder or file system, never
        replacing anything: a hard link at `dst` (atomic, FileExistsError when any entry, a dangling link
        included, has that name), then `src` removed; `rename_new` where hard links are not supported. `src` must
        be a regular file, not a link (and with `same_as`, the `os.fstat` of the file the tool created there:
        that very file)."""
        s, d = self.check(src), self.check(dst)
        st = self._no_link(s)
        if st is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", s)
        if not stat.S_ISREG(st.st_mode):
            raise OwnershipError(f"refused: {s} is not a regular file")
        _same_file(s, st, same_as)
        try:
            os.link(s, d, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            self.rename_new(s, d)
            return
        os.unlink(s)

    def set_aside(self, path: str | os.PathLike, suffix: str, *, same_as: os.stat_result | None = None) -> Path:
        """Move the tool's regular file `path` to `<name><suffix>`, or when that name is taken (by anything) to the
        first free `<name><suffix>.1`, `.2`...: nothing is ever replaced. Returns where it went."""
        full = Path(self.check(path))
        for n in range(1000):
            dst = full.with_name(full.name + suffix + (f".{n}" if n else ""))
            try:
                self.move_new(full, dst, same_as=same_as)
            except FileExistsError:
                continue
            return dst
        raise FileExistsError(errno.EEXIST, f"no free name for {full.name}{suffix}.N", str(full))

    def open_new(self, path: str | os.PathLike) -> int:
        """A write descriptor of the new regular file `path` (O_EXCL and O_NOFOLLOW: FileExistsError when the name
        is taken by anything, a dangling link included; nothing is opened through a link or truncated)."""
        return os.open(self.check(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o644)

    def rename_new(self, src: str | os.PathLike, dst: str | os.PathLike) -> None:
        """Move `src` (a file or a folder the tool made) to `dst`, which must not exist: FileExistsError
        otherwise, nothing replaced. Across file systems (a linked OUT/data on another disk) it copies, then
        removes `src`."""
        s, d = self.check(src), self.check(dst)
        if os.path.lexists(d):
            raise FileExistsError(errno.EEXIST, "exists already, not replaced", d)
        try:
            os.rename(s, d)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            if os.path.isdir(s) and not os.path.islink(s):
                _copy_tree_new(s, d)
            else:
                _copy_file_new(s, d)
            self.remove_tree(s)

    def merge_new(self, src: str | os.PathLike, dst: str | os.PathLike) -> None:
        """Move every file of the tool's folder `src` into the existing folder `dst` under the same relative
        name, then remove `src`. Refused (FileExistsError, nothing moved) when any of those names exists in
        `dst` already: nothing there is ever replaced."""
        s, d = self.check(src), self.check(dst)
        files: list[str] = []
        todo = [""]
        while todo:
            rel = todo.pop()
            with os.scandir(os.path.join(s, rel)) as entries:
                for entry in entries:
                    name = os.path.join(rel, entry.name)
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(name)
                    elif os.path.lexists(os.path.join(d, name)):
                        raise FileExistsError(errno.EEXIST, "exists already, not replaced", os.path.join(d, name))
                    else:
                        files.append(name)
        for name in sorted(files):
            target = os.path.join(d, name)
            folder = os.path.dirname(target)
            if not os.path.isdir(folder):
                _makedirs(self.check(folder))
            self.rename_new(os.path.join(s, name), target)
        self.remove_tree(s)

    def move_entries(self, src: str | os.PathLike, dst: str | os.PathLike) -> None:
        """Move every entry (file or folder) directly inside the tool's folder `src` into the tool's folder `dst`
        on the same file system, one rename each through folder descriptors (a split shard's tasks put together:
        `run.tasks`), then remove `src`. Refused (FileExistsError, nothing moved) when a name exists in `dst`."""
        s, d = self.check(src), self.check(dst)
        sfd = os.open(s, _DIR_FLAGS | _NOFOLLOW)
        try:
            dfd = os.open(d, _DIR_FLAGS | _NOFOLLOW)
            try:
                names = sorted(os.listdir(sfd))
                for name in names:
                    try:
                        os.lstat(name, dir_fd=dfd)
                    except FileNotFoundError:
                        continue
                    raise FileExistsError(errno.EEXIST, "exists already, not replaced", os.path.join(d, name))
                for name in names:
                    os.rename(name, name, src_dir_fd=sfd, dst_dir_fd=dfd)
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)
        self.remove_tree(s)

    def link_new(self, src: str | os.PathLike, dst: str | os.PathLike) -> None:
        """Hard-link the tool's file `src` at `dst` (never replaces: FileExistsError); copies across file
        systems. The caller removes `src` afterwards."""
        s, d = self.check(src), self.check(dst)
        try:
            os.link(s, d, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            _copy_file_new(s, d)

    def link_input(self, src_dir_fd: int, src_name: str | bytes, dst: str | os.PathLike) -> None:
        """Hard-link a file of an input folder (`src_name` below the open folder `src_dir_fd`, never through a
        symlink: one there is linked as itself) at the new name `dst` below the root; FileExistsError when `dst`
        is taken, nothing replaced. The input file itself is not touched (`shard.folderstream`)."""
        os.link(src_name, self.check(dst), src_dir_fd=src_dir_fd, follow_symlinks=False)

    def create_new_at(self, dir_fd: int, name: str | bytes, data: bytes) -> None:
        """Create the new regular file `name` holding `data` in a folder of this root opened as `dir_fd` (without
        following a link on the way: `shard.folderstream`); O_EXCL and O_NOFOLLOW: FileExistsError when the name
        is taken by anything, a dangling link included, nothing replaced. Removed again only through
        `remove_files` with its `contents` (store.inplace)."""
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o644, dir_fd=dir_fd)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)

    def symlink_new(self, target: str, dst: str | os.PathLike) -> None:
        """Make `dst` (a new name below the root: FileExistsError otherwise) a symlink to the absolute `target`
        (--link symlink); the link is the tool's, removed by `remove_files(..., symlinks=True)`."""
        os.symlink(target, self.check(dst))

    def write_atomic_chunks(self, path: str | os.PathLike, chunks: Iterable[bytes]) -> None:
        """`write_atomic` for content made piece by piece (memory holds one piece at a time, not the file)."""
        full = Path(self.check(path))
        st = self._no_link(str(full))
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise OwnershipError(f"refused: {full} is not a file the tool wrote (left as it is)")
        tmp = full.with_name(f".{full.name}.tmp-{os.getpid()}")
        self.unlink(tmp)  # left by an earlier process with this pid
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            try:
                for data in chunks:
                    _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.replace(tmp, full)
        except BaseException:
            self.unlink(tmp)
            raise

    def write_atomic(self, path: str | os.PathLike, data: bytes) -> None:
        """Write a file the tool owns under a temporary name (`.<name>.tmp-<pid>`), sync it, rename it over."""
        self.write_atomic_chunks(path, (data,))


def _same_file(full: str, st: os.stat_result, same_as: os.stat_result | None) -> None:
    """Refuses when `same_as` is given and the file `full` (lstat `st`) is not that file any more."""
    if same_as is not None and (st.st_dev, st.st_ino) != (same_as.st_dev, same_as.st_ino):
        raise OwnershipError(f"refused: {full} is no longer the file the tool created there (left as it is)")


def would_remove(dir_fd: int, name: str | bytes, digest: bytes | None) -> bool:
    """Whether `remove_files(..., contents=...)` would remove `name` in the open folder `dir_fd`, its listed digest
    being `digest`: a regular file (never a link or folder) still holding the tool's bytes. For a dry run."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and _holds(dir_fd, os.fsdecode(name), st, digest)


__all__ = ["Root", "OwnershipError", "content_digest", "would_remove"]
