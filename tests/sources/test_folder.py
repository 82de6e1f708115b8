"""`sources.folder`: listing an extracted folder into units (sorted by key, a sample never split, fingerprints)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dalle3_etl.sources import folder as folder_mod
from dalle3_etl.sources.base import SourceError
from dalle3_etl.sources.folder import FolderUnit, expand_folder
from dalle3_etl.sources.resolve import resolve_inputs


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())


def listing(units: list[FolderUnit]) -> list[list[str]]:
    return [[os.fsdecode(rel) for rel, _ in u.files()] for u in units]


def test_members_of_a_key_stay_together_even_where_plain_name_order_splits_them(tmp_path):
    # by name "a.jpg" < "a.jpg.json" < "a.json": key "a.jpg" would fall between the members of key "a"
    touch(tmp_path, "a.json", "a.jpg", "a.jpg.json", "b.png", "b.json", "b-1.png")
    units = expand_folder("x", tmp_path, 1)
    assert listing(units) == [["a.jpg", "a.json"], ["a.jpg.json"], ["b.json", "b.png"], ["b-1.png"]]
    name = tmp_path.name
    assert [u.shard_id for u in units] == [f"{name}-{k:06d}" for k in range(4)]
    assert [u.size for u in units] == [len("a.jpg") + len("a.json"), len("a.jpg.json"), 11, 7]


def test_units_hold_a_fixed_number_of_samples_and_the_chunked_sort_is_the_plain_sort(tmp_path, monkeypatch):
    names = [f"{i:05d}.{ext}" for i in range(0, 500, 7) for ext in ("json", "jpg")]
    touch(tmp_path, *names)
    monkeypatch.setattr(folder_mod, "CHUNK", 9)  # many chunks merged
    units = expand_folder("x", tmp_path, 10)
    assert [len(u) for u in listing(units)] == [20] * 7 + [2 * (len(names) // 2 - 70)]
    assert [n for u in listing(units) for n in u] == sorted(names)  # keys of one length: the plain order


def test_hidden_names_are_skipped_and_links_are_listed_not_followed(tmp_path):
    touch(tmp_path, "a.jpg", "a.json", ".DS_Store", "._a.jpg", ".cache/x.jpg", "sub/b.jpg")
    (tmp_path / "linkdir").symlink_to(tmp_path / "sub")
    (tmp_path / "c.jpg").symlink_to(tmp_path / "a.jpg")
    (units,) = [expand_folder("x", tmp_path, 100)]
    assert [(os.fsdecode(r), k) for u in units for r, k in u.files()] == [
        ("a.jpg", b"f"),
        ("a.json", b"f"),
        ("c.jpg", b"l"),
        ("linkdir", b"l"),
        ("sub/b.jpg", b"f"),
    ]


def test_fingerprint_changes_with_a_name_size_or_mtime_of_its_unit_only(tmp_path):
    touch(tmp_path, *(f"{i}.{e}" for i in range(4) for e in ("jpg", "json")))

    def prints():
        return [u.fingerprint for u in expand_folder("x", tmp_path, 2)]

    first = prints()
    assert first == prints()
    os.utime(tmp_path / "3.json", ns=(5, 5))
    second = prints()
    assert second[0] == first[0] and second[1] != first[1]
    (tmp_path / "0.jpg").write_bytes(b"longer than before")
    third = prints()
    assert third[0] != second[0] and third[1] == second[1]
    os.rename(tmp_path / "1.jpg", tmp_path / "1.png")
    assert prints()[0] != third[0]


def test_a_folder_of_tars_stays_a_folder_of_shards_and_mixed_folders_are_refused(tmp_path):
    touch(tmp_path / "shards", "data-000000.tar", "dataset_info.json")
    assert expand_folder("x", tmp_path / "shards", 10) is None
    touch(tmp_path / "mixed", "data-000000.tar", "sub/a.jpg")
    with pytest.raises(SourceError, match="both tar shards"):
        resolve_inputs([str(tmp_path / "mixed")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no .tar shards"):
        resolve_inputs([str(tmp_path / "empty")])


def test_two_folders_with_one_name_are_refused_by_their_unit_ids(tmp_path):
    touch(tmp_path / "a" / "ex", "1.jpg", "1.json")
    touch(tmp_path / "b" / "ex", "2.jpg", "2.json")
    with pytest.raises(SourceError, match="two inputs share shard id 'ex-000000'"):
        resolve_inputs([str(tmp_path / "a" / "ex"), str(tmp_path / "b" / "ex")])


def test_a_folder_name_that_cannot_name_output_is_refused(tmp_path):
    folder = tmp_path / "bad\x01name"
    touch(folder, "1.jpg", "1.json")
    with pytest.raises(SourceError, match="control character"):
        resolve_inputs([str(folder)])
