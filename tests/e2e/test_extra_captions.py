"""Several captions per image end to end: `convert --extra-captions FIELDS`.

<stem>.txt holds one caption a line (SimpleTuner picks one line per step), the parquet keeps `caption` and adds
`captions`, the SimpleTuner entry points at what its caption strategy reads, `verify` accepts several lines
exactly when the output was made with extra captions, and the summary counts the captions SimpleTuner embeds."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from badinput_helpers import img, js, write_shards
from typer.testing import CliRunner

from dalle3_etl.check.stats import compute_stats
from dalle3_etl.check.verify import verify
from dalle3_etl.cli import app
from dalle3_etl.settings import BASE_COLUMNS
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.records import all_records

EXTRA = ["--extra-captions", "long_caption,short_caption2"]


def shard() -> list[tuple[str, bytes]]:
    fields = {
        "fox": dict(
            caption="a red fox",
            long_caption="A red fox\nin the  snow.",
            short_caption2=["a red  fox", "", "\u200b", "a fox", 7, "A red fox in the snow.", "a fox\n"],
            url="https://x/fox",
        ),
        "owl": dict(caption=..., long_caption="An owl at night."),  # the first caption is long_caption's
        "cat": dict(caption="a cat", url="https://x/cat"),  # no extra field: one caption
        "dog": dict(caption="a dog", long_caption="a dog", short_caption2="a  dog"),  # only repeats
    }
    members = []
    for key, extra in fields.items():
        members += [(f"{key}.jpg", img()), (f"{key}.json", js(**extra))]
    return members


CAPTIONS = {
    "s/fox.jpg": ["a red fox", "A red fox in the snow.", "a fox"],
    "s/owl.jpg": ["An owl at night."],
    "s/cat.jpg": ["a cat"],
    "s/dog.jpg": ["a dog"],
}


@pytest.fixture
def shards(tmp_path) -> Path:
    write_shards(tmp_path / "in", {"s.tar": shard()})
    return tmp_path / "in"


def _cli(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def _convert(shards: Path, out: Path, *flags: str) -> str:
    result = _cli("convert", shards, "-o", out, "--workers", "1", *flags)
    assert result.exit_code == 0, result.output
    return result.output


def test_captions_one_a_line_in_the_txt_and_a_list_column_in_the_parquet(shards, tmp_path):
    out = tmp_path / "out"
    _convert(shards, out, *EXTRA, "--fields", "url")
    table = pq.read_table(out / "dalle3.parquet")
    assert table.column_names == [*BASE_COLUMNS, "captions", "url"]
    assert table.schema.field("captions").type == pa.list_(pa.string())
    rows = {r["filename"]: r for r in table.to_pylist()}
    assert {name: r["captions"] for name, r in rows.items()} == CAPTIONS
    for name, captions in CAPTIONS.items():
        assert rows[name]["caption"] == captions[0]
        txt = (out / "data" / name).with_suffix(".txt").read_bytes()
        assert txt == "\n".join(captions).encode()  # first caption first, no newline at the end
    assert rows["s/fox.jpg"]["url"] == "https://x/fox"
    assert (out / "rejects.jsonl").read_bytes() == b""


def test_textfile_strategy_entry_reads_the_txt_and_verify_accepts_several_lines(shards, tmp_path):
    out = tmp_path / "out"
    _convert(shards, out, *EXTRA)
    (image,) = [e for e in orjson.loads((out / "multidatabackend.json").read_bytes()) if "instance_data_dir" in e]
    assert (image["caption_strategy"], image["parquet"]["caption_column"]) == ("textfile", "caption")
    report = verify(out)
    assert report.ok, [c.to_json() for c in report.failed]
    assert report.checks["multiline_caption_file"].status == "skipped"
    stats = compute_stats(out)  # every caption, the caption files' lines, as with the parquet strategy
    assert sorted(stats.caption_chars.to_pylist()) == sorted(len(c) for cs in CAPTIONS.values() for c in cs)


@pytest.mark.parametrize("text", [b"a red fox\n\nan owl", b"a red fox\n", b"\na red fox", b"a red fox\n  \nx"])
def test_verify_still_fails_on_an_empty_line(shards, tmp_path, text):
    out = tmp_path / "out"
    _convert(shards, out, *EXTRA)
    (out / "data/s/fox.txt").write_bytes(text)
    report = verify(out)
    assert [c.code for c in report.failed] == ["empty_caption_file"]
    assert report.checks["empty_caption_file"].examples[0].startswith("s/fox.txt: line ")


def test_verify_fails_on_a_newline_when_made_without_extra_captions(shards, tmp_path):
    out = tmp_path / "out"
    _convert(shards, out)
    assert verify(out).ok
    assert (out / "data/s/fox.txt").read_bytes() == b"a red fox"
    (out / "data/s/fox.txt").write_bytes(b"a red fox\nA red fox in the snow.")
    report = verify(out)
    assert [c.code for c in report.failed] == ["multiline_caption_file"]


def test_parquet_strategy_entry_points_at_the_captions_list(shards, tmp_path):
    out = tmp_path / "out"
    _convert(shards, out, *EXTRA, "--no-captions")
    (image,) = [e for e in orjson.loads((out / "multidatabackend.json").read_bytes()) if "instance_data_dir" in e]
    assert (image["caption_strategy"], image["parquet"]["caption_column"]) == ("parquet", "captions")
    assert not list((out / "data").rglob("*.txt"))
    assert verify(out).ok
    stats = compute_stats(out)  # caption lengths over every caption of the list column
    assert len(stats.caption_chars) == sum(map(len, CAPTIONS.values()))
    table = pq.read_table(out / "dalle3.parquet")
    captions = table.column("captions").to_pylist()
    captions[0] = [captions[0][0], " "]  # a blank caption in a list: SimpleTuner would fail on it
    index = table.column_names.index("captions")
    table = table.set_column(index, table.schema.field(index), pa.array(captions, pa.list_(pa.string())))
    pq.write_table(table, out / "dalle3.parquet")
    report = verify(out)
    assert [c.code for c in report.failed] == ["empty_caption"]


def test_summary_counts_the_captions_simpletuner_will_embed(shards, tmp_path):
    out = tmp_path / "out"
    output = _convert(shards, out, *EXTRA)
    extra = sum(map(len, CAPTIONS.values())) - len(CAPTIONS)
    assert all_records(Layout(out))["s"].notes["extra_captions"] == extra == 2
    text = " ".join(output.split())
    assert re.search(rf"captions SimpleTuner will embed \(rows \+ extra captions\) │ {len(CAPTIONS) + extra} │", text)
    plain = _convert(shards, tmp_path / "plain")
    assert "will embed" not in plain and "extra captions" not in plain


def test_extra_captions_are_pinned_and_cannot_take_a_fields_column(shards, tmp_path):
    out = tmp_path / "out"
    _convert(shards, out, *EXTRA)
    result = _cli("convert", shards, "-o", out, "--workers", "1")
    assert result.exit_code == 2 and "--extra-captions" in result.output
    result = _cli("convert", shards, "-o", out, "--workers", "1", "--extra-captions", "long_caption")
    assert result.exit_code == 2 and "--extra-captions" in result.output
    result = _cli("convert", shards, "-o", tmp_path / "other", *EXTRA, "--fields", "captions")
    assert result.exit_code == 2 and "'captions' is the column --extra-captions writes" in result.output
    assert not (tmp_path / "other").exists()
