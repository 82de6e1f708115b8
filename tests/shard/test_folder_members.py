"""`shard.folderstream.FolderReader`: an extracted folder's unit gives the member stream its tar gives."""

from __future__ import annotations

import errno
import os
import tarfile

import pytest

from dalle3_etl.devtools.synth import SynthSpec, write_corpus
from dalle3_etl.shard import folderstream
from dalle3_etl.shard.folderstream import FolderReader, MemberChanged
from dalle3_etl.shard.tarstream import TarReader
from dalle3_etl.sources.folder import expand_folder, folder_units, scan_folder
from dalle3_etl.store.fsio import Root


@pytest.fixture
def shard_and_folder(tmp_path):
    write_corpus(tmp_path / "tars", SynthSpec(shards=1, per_shard=20, seed=3, image_bytes=800))
    tar = tmp_path / "tars" / "data-000000.tar"
    folder = tmp_path / "ex"
    folder.mkdir()
    with tarfile.open(tar) as tf:
        tf.extractall(folder, filter="data")
    return tar, folder


def members(reader) -> dict[str, tuple[int, bytes]]:
    return {m.name: (m.size, reader.read()) for m in reader}


def test_the_same_names_sizes_and_bytes_as_the_tar(shard_and_folder):
    tar, folder = shard_and_folder
    with open(tar, "rb") as fh:
        want = members(TarReader(fh))
    (unit,) = expand_folder("x", folder, 1000)
    with unit.open() as handle:
        reader = FolderReader(unit, handle.fd)
        got = members(reader)
        reader.close()
    assert got == want
    assert unit.size == sum(size for size, _ in want.values())


def test_offsets_give_each_file_back_by_pread_and_copy_range(shard_and_folder, tmp_path):
    _, folder = shard_and_folder
    (unit,) = expand_folder("x", folder, 1000)
    with unit.open() as handle:
        reader = FolderReader(unit, handle.fd)
        seen = [(m.name, m.offset, m.size) for m in reader]
        assert len({off for _, off, _ in seen}) == len(seen)
        for name, offset, size in seen:
            body = (folder / name).read_bytes()
            assert reader.pread(offset + 2, 5) == body[2:7]
            dst = os.open(tmp_path / "copy", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                assert reader.copy_range(offset, size, dst) == size
            finally:
                os.close(dst)
            assert (tmp_path / "copy").read_bytes() == body
        reader.close()


def test_a_file_replaced_while_its_unit_is_read_rejects_the_sample_not_the_unit(shard_and_folder):
    _, folder = shard_and_folder
    (unit,) = expand_folder("x", folder, 1000)
    monkey_max = folderstream.MAX_OPEN
    folderstream.MAX_OPEN = 1  # every descriptor but the last is closed: a later read opens the file again
    try:
        with unit.open() as handle:
            reader = FolderReader(unit, handle.fd)
            walk = iter(reader)
            first = next(walk)
            next(walk)
            (folder / "new").write_bytes(b"other")  # made while the old one exists: another inode
            os.replace(folder / "new", folder / first.name)
            with pytest.raises(MemberChanged, match="replaced by another file"):
                reader.pread(first.offset, 4)
            reader.close()
    finally:
        folderstream.MAX_OPEN = monkey_max


def test_place_hard_links_and_copies_where_the_link_is_refused(shard_and_folder, tmp_path, monkeypatch):
    _, folder = shard_and_folder
    (unit,) = expand_folder("x", folder, 1000)
    with unit.open() as handle:
        reader = FolderReader(unit, handle.fd, link=Root(tmp_path))
        images = [m for m in reader if not m.name.endswith(".json")]
        created: list[str] = []
        reader.place(images[0].offset, str(tmp_path / "linked"), created)
        assert os.path.samefile(tmp_path / "linked", folder / images[0].name)

        def refuse(*args, **kwargs):
            raise OSError(errno.EXDEV, "cross-device link")

        monkeypatch.setattr(folderstream.os, "link", refuse)
        reader.place(images[1].offset, str(tmp_path / "copied"), created)
        assert not os.path.samefile(tmp_path / "copied", folder / images[1].name)
        assert (tmp_path / "copied").read_bytes() == (folder / images[1].name).read_bytes()
        assert created == [str(tmp_path / "linked"), str(tmp_path / "copied")] and reader.copied == 1
        with pytest.raises(FileExistsError):
            reader.place(images[1].offset, str(tmp_path / "linked"), created)
        reader.close()


def test_copy_range_without_copy_file_range_the_portable_path(shard_and_folder, tmp_path, monkeypatch):
    """macOS has no os.copy_file_range: the pread/write loop gives the same bytes."""
    _, folder = shard_and_folder
    monkeypatch.delattr(os, "copy_file_range", raising=False)
    (unit,) = expand_folder("x", folder, 1000)
    with unit.open() as handle:
        reader = FolderReader(unit, handle.fd)
        for m in [m for m in reader if m.name.endswith((".jpg", ".png", ".jpeg"))][:3]:
            dst = os.open(tmp_path / m.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            try:
                assert reader.copy_range(m.offset, m.size, dst) == m.size
            finally:
                os.close(dst)
            assert (tmp_path / m.name).read_bytes() == (folder / m.name).read_bytes()
        reader.close()


def test_a_subfolder_swapped_for_a_link_after_the_listing_is_not_followed(tmp_path):
    folder = tmp_path / "ex"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.json").write_bytes(b"{}")
    (folder / "sub" / "b.json").write_bytes(b"{}")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "a.json").write_bytes(b'{"secret": 1}')
    (unit,) = folder_units(folder, scan_folder(folder), 1000)  # JSON files only: not an extracted folder yet
    os.rename(folder / "sub", tmp_path / "moved")
    (folder / "sub").symlink_to(tmp_path / "elsewhere")
    with unit.open() as handle:
        reader = FolderReader(unit, handle.fd)
        seen = [(m.name, m.problem, reader.read()) for m in reader]
        reader.close()
    assert [name for name, _, _ in seen] == ["sub/a.json", "sub/b.json"]
    assert all("not followed" in problem and data == b"" for _, problem, data in seen)


def test_files_in_subfolders_are_read_and_linked_below_their_folder(tmp_path):
    folder = tmp_path / "ex"
    for name in ("d1/a.json", "d1/b.json", "d2/x/c.json", "e.json"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(name.encode())
    (unit,) = folder_units(folder, scan_folder(folder), 1000)
    with unit.open() as handle:
        reader = FolderReader(unit, handle.fd, link=Root(tmp_path))
        got = {m.name: (m.offset, reader.read()) for m in reader}
        assert {k: v[1] for k, v in got.items()} == {
            n: n.encode() for n in ("d1/a.json", "d1/b.json", "d2/x/c.json", "e.json")
        }
        reader.place(got["d2/x/c.json"][0], str(tmp_path / "linked"), [])
        assert os.path.samefile(tmp_path / "linked", folder / "d2" / "x" / "c.json")
        assert reader.pread(got["d1/a.json"][0], 2) == b"d1"
        reader.close()
