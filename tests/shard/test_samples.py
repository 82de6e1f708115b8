"""Grouping members into samples by key."""

from __future__ import annotations

import pytest

from dalle3_etl.shard.samples import Duplicate, Entry, Pairing, classify


@pytest.mark.parametrize(
    "name, expected",
    [
        ("000123.jpg", ("000123", "image", "jpg")),
        ("a/000123.v2.JPEG", ("a/000123.v2", "image", "JPEG")),
        ("000123.JSON", ("000123", "json", "JSON")),
        ("000123.txt", ("000123", None, "txt")),
        ("dir.d/noext", ("dir.d/noext", None, "")),
        (".json", (".json", None, "")),
    ],
)
def test_key_is_the_name_without_its_last_extension(name, expected):
    assert classify(name) == expected


def test_members_pair_in_either_order_and_when_not_adjacent():
    p = Pairing(max_pending=10)
    assert p.add("a", "json", "a.json", 1) == (None, [])
    assert p.add("b", "image", "b.jpg", 2) == (None, [])
    done, problems = p.add("a", "image", "a.jpg", 3)
    assert problems == [] and done.key == "a" and done.json.payload == 1 and done.image.payload == 3
    done, _ = p.add("b", "json", "b.json", 4)
    assert done.key == "b"
    assert p.leftovers() == []


def test_duplicates_are_reported_not_paired():
    p = Pairing(max_pending=10)
    p.add("a", "image", "a.jpg", 1)
    done, problems = p.add("a", "image", "a.png", 2)
    assert done is None and isinstance(problems[0], Duplicate) and "a.jpg" in problems[0].reason
    p.add("a", "json", "a.json", 3)
    done, problems = p.add("a", "json", "a.json", 4)
    assert done is None and "already converted" in problems[0].reason


def test_pending_members_are_bounded_and_reported():
    p = Pairing(max_pending=2)
    p.add("a", "image", "a.jpg", 1)
    p.add("b", "image", "b.jpg", 2)
    done, problems = p.add("c", "json", "c.json", 3)
    assert done is None and len(problems) == 1 and isinstance(problems[0], Entry) and problems[0].key == "a"
    assert [e.key for e in p.leftovers()] == ["b", "c"]
