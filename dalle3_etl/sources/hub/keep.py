"""Kept copies of Hub files (``--keep-tars DIR``): written to ``DIR/<name>.part`` while the file is read, renamed to
``DIR/<name>`` only after a complete, verified read; a kept copy found damaged is moved aside to ``<name>.corrupt``.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from dalle3_etl.store.fsio import Root


def kept_path(keep_dir: Path | str, path_in_repo: str) -> Path:
    """Where the file ``path_in_repo`` is kept in ``keep_dir``."""
    return Path(keep_dir) / PurePosixPath(path_in_repo).name


def set_aside(copy: Path) -> Path:
    """Move a damaged kept copy to ``<name>.corrupt`` (it is downloaded again next time); returns where it went."""
    bad = copy.with_name(copy.name + ".corrupt")
    Root(copy.parent).replace(copy, bad)
    return bad


class KeepWriter:
    """The bytes of a file being read, written to ``<final>.part``; `commit` (once the read was verified) renames
    it to ``final``, `discard` removes it."""

    def __init__(self, final: Path):
        final.parent.mkdir(parents=True, exist_ok=True)
        self.final = final
        self.part = final.with_name(final.name + ".part")
        self._fh = open(self.part, "wb")

    def write(self, chunk: bytes) -> None:
        self._fh.write(chunk)

    def commit(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        Root(self.part.parent).replace(self.part, self.final)

    def close(self) -> None:
        self._fh.close()

    def discard(self) -> None:
        self._fh.close()
        Root(self.part.parent).unlink(self.part)


__all__ = ["kept_path", "set_aside", "KeepWriter"]
