"""Writing plain uncompressed tars with fixed member metadata (same members, same bytes)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from pathlib import Path

#: Fixed tar member metadata (determinism: same spec -> identical bytes).
TAR_MTIME = 1_700_000_000
TAR_UID = 1000
TAR_GID = 1000
TAR_UNAME = "user"
TAR_GNAME = "user"
TAR_MODE = 0o644


def write_tar(
    path: Path | str,
    members: Iterable[tuple[str | tarfile.TarInfo, bytes | None]],
    *,
    format: int = tarfile.GNU_FORMAT,
) -> None:
    """Write a plain uncompressed tar with fixed metadata (mtime/uid/gid/names/mode), members in order.

    Each member is ``(name, data)``; for hand-built oddities pass a ready ``tarfile.TarInfo`` instead of
    the name (its fields are kept; ``size`` is set from ``data`` when data is not None; use ``None`` for
    links/directories).  Names are written verbatim (absolute names, ``..`` and long names included).
    """
    with open(path, "wb", buffering=1 << 20) as fh, tarfile.open(fileobj=fh, mode="w", format=format) as tf:
        for name, data in members:
            if isinstance(name, tarfile.TarInfo):
                ti = name
            else:
                ti = tarfile.TarInfo(name)
                ti.mtime = TAR_MTIME
                ti.uid, ti.gid = TAR_UID, TAR_GID
                ti.uname, ti.gname = TAR_UNAME, TAR_GNAME
                ti.mode = TAR_MODE
            if data is None:
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
