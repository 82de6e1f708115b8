"""`sources.folder`'s external sort: chunks spilled as blocks of marshalled records and merged back give the units
a single in-memory sort gives (names, digests, sizes), whatever the chunk and block sizes, names not UTF-8 too."""

from __future__ import annotations

import os
from pathlib import Path

from dalle3_etl.sources import folder as folder_mod
from dalle3_etl.sources.folder import expand_folder


def units_of(folder: Path) -> list[tuple]:
    return [(u.names, u.fingerprint["digest"], u.fingerprint["files"], u.size) for u in expand_folder("x", folder, 7)]


def test_chunk_and_block_sizes_do_not_change_the_units(tmp_path, monkeypatch):
    names = [b"%05d.%s" % (i, ext) for i in range(0, 300, 3) for ext in (b"json", b"jpg")]
    names += [b"z\xff\xfe.jpg", b"z\xff\xfe.json", b"sub/a.png", b"sub/a.json", b"a b.jpeg"]
    for name in names:
        path = tmp_path / os.fsdecode(name)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(name * (len(name) % 5 + 1))
    whole = units_of(tmp_path)  # one chunk, one block
    assert sum(files for _n, _d, files, _s in whole) == len(names)
    for chunk, block in ((9, 2), (50, 7), (13, 1)):
        monkeypatch.setattr(folder_mod, "CHUNK", chunk)
        monkeypatch.setattr(folder_mod, "_BLOCK", block)
        assert units_of(tmp_path) == whole
