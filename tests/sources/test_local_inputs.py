"""Local inputs as shard sources, unit tests: shard ids in one total natural order, hidden files in a folder are
not shards. (Moved from test_hostile_inputs; the end-to-end cases stay there.)"""

from __future__ import annotations

import itertools
import random

from dalle3_etl.sources.base import natural_key


def test_natural_key_is_a_total_order():
    names = [
        "data-1",
        "data-01",
        "data-001",
        "data-2",
        "data-10",
        "data-1a",
        "data-01a",
        "data",
        "a1",
        "a01b2",
        "a1b02",
        "\u00b2",
        "\u0663",
        "x\u0661\u0660",
    ]  # superscript two; Arabic-Indic 3, 10
    expected = sorted(names, key=natural_key)
    assert expected[expected.index("data-001") :][:5] == ["data-001", "data-01", "data-1", "data-01a", "data-1a"]
    rng = random.Random(5)
    for _ in range(50):
        rng.shuffle(names)
        assert sorted(names, key=natural_key) == expected
    for a, b in itertools.combinations(names, 2):
        assert natural_key(a) != natural_key(b), (a, b)


def test_hidden_files_in_a_folder_are_not_shards(tmp_path):
    """macOS leaves `._<name>` resource forks beside files copied from its drives; a folder scan skips hidden
    names like a shell glob does, instead of refusing the run over them."""
    from dalle3_etl.devtools.synth import SynthSpec, write_corpus
    from dalle3_etl.sources.resolve import resolve_inputs

    folder = tmp_path / "in"
    write_corpus(folder, SynthSpec(shards=1, per_shard=2, seed=1, image_bytes=200))
    (folder / "._data-000000.tar").write_bytes(b"\0\5\26\7 AppleDouble")
    (folder / ".cache" / "x").mkdir(parents=True)
    (folder / ".cache" / "x" / "data-000009.tar").write_bytes(b"partial")
    assert [s.shard_id for s in resolve_inputs([str(folder)])] == ["data-000000"]
