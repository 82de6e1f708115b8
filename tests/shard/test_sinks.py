"""sinks: the part's Arrow arrays equal pyarrow's own, and building them does not drag pandas in."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from dalle3_etl.shard import sinks

TEXT = st.one_of(st.none(), st.text(max_size=30))
STRING_LISTS = st.one_of(st.none(), st.lists(st.text(max_size=10), max_size=4))


def _same(values, type_):
    got = sinks.column_array(values, type_)
    want = pa.array(values, type_)
    assert got.type == want.type
    assert got.equals(want), (got, want)
    assert got.to_pylist() == values
    assert got.null_count == want.null_count
    got.validate(full=True)


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["a"],
        [""],
        ["", "", ""],
        [None],
        [None, None],
        ["x", None, "ü€😀", "", None, "tab\tnew"],
        ["a" * 1000, "b"],
        [None] * 9 + ["last"],  # a validity bitmap across a byte boundary
    ],
)
def test_strings_equal_pa_array(values):
    _same(values, pa.string())


@pytest.mark.parametrize("values", [[], [1], [1024, 1792, 0, -5, 2**31 - 1, -(2**31)]])
def test_int32_equal_pa_array(values):
    _same(values, pa.int32())


@pytest.mark.parametrize(
    "values",
    [
        [],
        [None],
        [[]],
        [[""]],
        [["a", "b"], None, [], ["ü"]],
        [None, ["x"]] * 5,
    ],
)
def test_string_lists_equal_pa_array(values):
    _same(values, pa.list_(pa.string()))


@hsettings(max_examples=60, deadline=None)
@given(st.lists(TEXT, max_size=40), st.lists(STRING_LISTS, max_size=20))
def test_random_columns_equal_pa_array(strings, lists):
    _same(strings, pa.string())
    _same(lists, pa.list_(pa.string()))


def test_past_the_offset_limit_pyarrow_builds_it(monkeypatch):
    monkeypatch.setattr(sinks, "MAX_OFFSET", 3)
    assert sinks._string_array(["abcd"]) is None  # too many bytes for the hand-built path ...
    _same(["abcd", None, "ef"], pa.string())  # ... so pa.array builds the same thing
    assert sinks._string_list_array([["a", "b", "c", "d"]]) is None
    _same([["a", "b", "c", "d"], None], pa.list_(pa.string()))


def test_out_of_range_int_gets_pyarrows_error():
    with pytest.raises((OverflowError, pa.ArrowInvalid)):
        sinks.column_array([2**31], pa.int32())


@pytest.mark.skipif(importlib.util.find_spec("pandas") is None, reason="pandas not installed: nothing to drag in")
def test_converting_a_shard_does_not_import_pandas(corpus, tmp_path):
    """pandas is installed wherever SimpleTuner runs; a pool worker that imports it pays ~0.2 s and ~47 MB."""
    shard = sorted(corpus[0].glob("*.tar"))[0]
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from dalle3_etl.settings import Settings
        from dalle3_etl.shard.convert import convert_shard
        from dalle3_etl.sources.resolve import resolve_inputs
        from dalle3_etl.store.layout import Layout
        out = Path({str(tmp_path / "out")!r})
        Layout(out).ensure()
        settings = Settings(fields=("short_caption2", "url"))
        result = convert_shard(resolve_inputs([{str(shard)!r}])[0], out, settings)
        assert result.ok and result.samples > 0, result
        print("pandas" in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
