"""The low-level steps `Root` is made of: folder descriptors opened without following links, exclusive creates,
content comparison, the copy fallback across file systems. Only `fsio` uses them (and it is the one package that
deletes, moves or overwrites: a test greps the rest of the package)."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_MAX_COMPARED = 1 << 20  # a caption file bigger than this is not one the tool wrote (captions are a few KB)


def _write_all(fd: int, data: bytes) -> None:
    done = os.write(fd, data)  # a small file: one call (no memoryview)
    if done == len(data):
        return
    view = memoryview(data)[done:]
    while view:
        view = view[os.write(fd, view) :]


def content_digest(data: bytes) -> bytes:
    """What `remove_files(contents=...)` compares a file's bytes with."""
    return hashlib.blake2b(data, digest_size=16).digest()


def _holds(dir_fd: int, name: str, st: os.stat_result, digest: bytes | None) -> bool:
    """Whether the regular file `name` (lstat `st`) still holds the bytes whose `content_digest` is `digest`."""
    if digest is None or st.st_size > _MAX_COMPARED:
        return False
    try:
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0), dir_fd=dir_fd)
    except OSError:
        return False
    try:
        data = os.read(fd, _MAX_COMPARED + 1)
    finally:
        os.close(fd)
    return content_digest(data) == digest


def _open_below(base_fd: int, folder: str) -> int | None:
    """An fd of `folder` below the folder `base_fd` ('' is the base itself, returned as is), opened one
    component at a time with O_NOFOLLOW; None when a component is missing, a symlink or not a folder."""
    if not folder:
        return base_fd
    fd = base_fd
    for part in folder.split("/"):
        try:
            nxt = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
        except OSError:
            nxt = None
        if fd != base_fd:
            os.close(fd)
        if nxt is None:
            return None
        fd = nxt
    return fd


def _makedirs(path: str) -> None:
    """os.makedirs without recursion (a folder thousands of levels deep is made like any other)."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise


def _rmdir_if_empty(name: str, dir_fd: int | None) -> None:
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.EBUSY, errno.ENOTDIR):
            raise


def _copy_file_new(src: str, dst: str) -> None:
    """Copy a regular file to a new name (O_EXCL: never over an existing one), data synced by the caller."""
    with open(src, "rb") as fin:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "wb", closefd=False) as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
        except BaseException:
            os.close(fd)
            os.unlink(dst)
            raise
        os.close(fd)


def _copy_tree_new(src: str, dst: str) -> None:
    """Copy a folder of regular files and folders (what the tool stages) to a new folder; iterative, so a
    tree thousands of folders deep is copied like any other."""
    todo = [(src, dst)]
    while todo:
        s, d = todo.pop()
        os.mkdir(d)
        with os.scandir(s) as it:
            for entry in it:
                target = os.path.join(d, entry.name)
                if entry.is_dir(follow_symlinks=False):
                    todo.append((entry.path, target))
                elif entry.is_file(follow_symlinks=False):
                    _copy_file_new(entry.path, target)
                elif entry.is_symlink():  # --link symlink's links, moved to another disk as links
                    os.symlink(os.readlink(entry.path), target)
