"""Kept copies of Hub files (``--keep-tars DIR``).

While a file is read its bytes go to a temporary the tool creates new, ``DIR/<name>.<random>.part`` (O_EXCL and
O_NOFOLLOW: never a file or link that was there before); after a complete, verified read it is moved to
``DIR/<name>`` without replacing anything, and after a failed one it is removed (only that file, the tool's).

A file already at ``DIR/<name>`` is never replaced, moved or removed. One of the Hub's size is read instead of the
network and checked against the Hub's sha256 while read: a verified copy is reused, one that does not match fails
its shard and is left as it is. Anything else there (another size, a folder, a link to nothing) is refused before
any work (`check_keep_dir`).
"""

from __future__ import annotations

import filecmp
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from dalle3_etl.sources.hub.errors import HubError, HubLocalFileError
from dalle3_etl.store.fsio import OwnershipError, Root

#: What a failed read of a kept copy says about it (the tool never moves or removes a file it found there).
LEFT_AS_IT_IS = "{} is left as it is (it is not the Hub's file): move it away and run again to download the shard"
#: How many problems one refusal names (then "and N more").
_NAMED = 5


def kept_path(keep_dir: Path | str, path_in_repo: str) -> Path:
    """Where the file ``path_in_repo`` is kept in ``keep_dir``."""
    return Path(keep_dir) / PurePosixPath(path_in_repo).name


def usable_copy(path: Path, size: int) -> bool:
    """Whether ``path`` is a regular file (a symlink to one is read through) of the Hub's ``size``: read instead of
    the network, and verified while read."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == size


def in_the_way(path: Path, size: int) -> str | None:
    """Why the entry at ``path`` cannot be a copy of a Hub file of ``size`` bytes; None when there is nothing there
    or a regular file of that size (its bytes are checked when read)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"it cannot be checked: {exc.strerror or exc}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "a symlink to nothing"
    except OSError as exc:
        return f"it cannot be checked: {exc.strerror or exc}"
    if stat.S_ISDIR(st.st_mode):
        return "a folder"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size != size:
        return f"{st.st_size} bytes, the Hub's file has {size}"
    return None


def refuse_in_the_way(option: str, problems: list[str], advice: str) -> None:
    """Raise `HubLocalFileError` naming the first problems (``"<path> (<why>)"``), if any."""
    if not problems:
        return
    more = f" and {len(problems) - _NAMED} more" if len(problems) > _NAMED else ""
    raise HubLocalFileError(f"{option}: in the way, left as it is: {'; '.join(problems[:_NAMED])}{more}; {advice}")


def check_keep_dir(keep_dir: Path | str, files: Iterable[tuple[str, int]]) -> None:
    """Refuse (`HubLocalFileError`, exit 2, before any work) a keep dir that is not a folder, or where a file to
    keep, ``(path in the repo, size)``, has a name taken by something that cannot be that file (`in_the_way`)."""
    folder = Path(keep_dir)
    if os.path.lexists(folder) and not folder.is_dir():
        raise HubLocalFileError(f"--keep-tars {folder}: not a folder")
    problems = []
    for path_in_repo, size in files:
        final = kept_path(folder, path_in_repo)
        why = in_the_way(final, size)
        if why is not None:
            problems.append(f"{final} ({why})")
    refuse_in_the_way("--keep-tars", problems, "move it away, or keep the tars in another folder")


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    if not (stat.S_ISREG(sa.st_mode) and stat.S_ISREG(sb.st_mode)) or sa.st_size != sb.st_size:
        return False
    return filecmp.cmp(a, b, shallow=False)


#: This process's temporaries being written, for `discard_live_parts` (a worker told to stop).
_LIVE: dict[int, KeepWriter] = {}


def discard_live_parts() -> None:
    """Remove the temporaries this process is writing (each the tool's own file only): a pool worker stopped by
    its driver (Ctrl-C) before its reads could finish, which would otherwise leave them in DIR."""
    for writer in list(_LIVE.values()):
        try:
            writer.discard()
        except OSError:
            pass


class KeepWriter:
    """The bytes of a file being read, written to a new temporary ``<final>.<random>.part``; `commit` (once the read
    was verified) moves it to ``final`` (never over anything), `discard` removes it."""

    def __init__(self, final: Path):
        final.parent.mkdir(parents=True, exist_ok=True)
        self.final = final
        self._root = root = Root(final.parent)
        for _ in range(100):
            part = final.with_name(f"{final.name}.{secrets.token_hex(4)}.part")
            try:
                fd = root.open_new(part)
            except FileExistsError:
                continue
            break
        else:
            raise FileExistsError(f"{final}: no free name for its temporary .part file")
        self.part = part
        self._created = os.fstat(fd)  # the file the tool made: the only one it moves or removes under that name
        self._fh = os.fdopen(fd, "wb")
        _LIVE[id(self)] = self

    def write(self, chunk: bytes) -> None:
        self._fh.write(chunk)

    def commit(self) -> None:
        """Move the verified copy to ``final``. If ``final`` appeared meanwhile, it is left as it is: fine when it
        holds the same bytes, else a `HubError` (the copy read is not kept)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        _LIVE.pop(id(self), None)
        root = self._root
        try:
            try:
                root.move_new(self.part, self.final, same_as=self._created)
                return
            except FileExistsError:
                pass
            same = _same_bytes(self.final, self.part)
            root.unlink(self.part, same_as=self._created)
        except OwnershipError as exc:
            raise HubError(f"{self.final}: the verified copy could not be kept: {exc}") from None
        if not same:
            raise HubError(
                f"{self.final} appeared while the file was read and is not the Hub's file: it is left as it is and "
                "the verified copy was not kept; move it away and run again"
            )

    def close(self) -> None:
        self._fh.close()

    def discard(self) -> None:
        """Remove the temporary (the tool's own file only; anything else now under its name stays)."""
        _LIVE.pop(id(self), None)
        self._fh.close()
        root = self._root
        try:
            root.unlink(self.part, same_as=self._created)
        except OwnershipError:
            pass


__all__ = [
    "LEFT_AS_IT_IS",
    "kept_path",
    "usable_copy",
    "in_the_way",
    "check_keep_dir",
    "refuse_in_the_way",
    "KeepWriter",
    "discard_live_parts",
]
