"""`dalle3-etl verify`: passes on a fresh conversion, and fails, naming the problem, after each breakage."""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import SynthSpec, write_corpus
from dalle3_etl.run.entry import write_dataloader_config
from dalle3_etl.settings import load_settings
from dalle3_etl.store.layout import Layout

verify_module = importlib.import_module("dalle3_etl.check.verify")
SPEC = SynthSpec(shards=2, per_shard=30, seed=5, image_bytes=2000)
runner = CliRunner()


@pytest.fixture(scope="session")
def converted(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("verify")
    truth = write_corpus(root / "src", SPEC)
    result = runner.invoke(app, ["convert", str(root / "src"), "-o", str(root / "out"), "-q", "-w", "1"])
    assert result.exit_code == 0, result.output
    return root / "out", truth


@pytest.fixture
def out(converted, tmp_path) -> Path:
    """A private copy of the converted output, its dataloader entry pointing at the copy."""
    dst = tmp_path / "out"
    shutil.copytree(converted[0], dst)
    write_dataloader_config(Layout(dst), load_settings())
    return dst


def run_verify(out: Path, *args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["verify", str(out), "--json", *args])
    return result.exit_code, orjson.loads(result.stdout)


def check(report: dict, code: str) -> dict:
    return next(c for c in report["checks"] if c["check"] == code)


def filenames(out: Path) -> list[str]:
    return pq.read_table(out / "dalle3.parquet", columns=["filename"]).column("filename").to_pylist()


def rewrite_parquet(out: Path, edit) -> None:
    path = out / "dalle3.parquet"
    table = edit(pq.read_table(path))
    pq.write_table(table, path)


def set_cell(table: pa.Table, column: str, row: int, value) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    index = table.schema.get_field_index(column)
    return table.set_column(index, table.schema.field(column), pa.array(values, table.schema.field(column).type))


def edit_entry(out: Path, **changes) -> None:
    path = out / "multidatabackend.json"
    entries = orjson.loads(path.read_bytes())
    for key, value in changes.items():
        if key.startswith("parquet_"):
            entries[0]["parquet"][key[len("parquet_") :]] = value
        else:
            entries[0][key] = value
    path.write_bytes(orjson.dumps(entries))


# --- a fresh conversion -----------------------------------------------------------------------------


def test_fresh_conversion_passes(out, converted):
    truth = converted[1]
    kept = [t for t in truth if t.caption is not None]
    code, report = run_verify(out, "--deep")
    assert code == 0, report
    assert report["ok"] and report["problems"] == []
    assert report["counts"]["rows"] == len(kept)
    assert report["counts"]["images_on_disk"] == len(kept)
    assert report["counts"]["caption_files"] == len(kept)
    assert report["counts"]["shards"] == SPEC.shards
    status = {c["check"]: c["status"] for c in report["checks"]}
    assert status.pop("imagefolder") == "skipped"  # not made with --also imagefolder
    assert status.pop("webshart") == "skipped"  # not made with --webshart
    assert set(status.values()) == {"ok"}


def test_text_report_says_ok(out):
    result = runner.invoke(app, ["verify", str(out)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.stdout and "SimpleTuner can start" in result.stdout
    assert "skipped" in result.stdout  # imagefolder and webshart: not made with them


# --- each breakage is named -------------------------------------------------------------------------


def delete_image(out: Path) -> str:
    name = filenames(out)[3]
    (out / "data" / name).unlink()
    return name


def delete_caption_file(out: Path) -> str:
    name = Path(filenames(out)[4]).with_suffix(".txt").as_posix()
    (out / "data" / name).unlink()
    return name


def empty_caption_file(out: Path) -> str:
    name = Path(filenames(out)[5]).with_suffix(".txt").as_posix()
    (out / "data" / name).write_bytes(b"  \n")
    return name


def multiline_caption_file(out: Path) -> str:
    name = Path(filenames(out)[6]).with_suffix(".txt").as_posix()
    (out / "data" / name).write_text("first caption\nsecond caption")
    return name


def add_image_without_row(out: Path) -> str:
    source = out / "data" / filenames(out)[0]
    name = "data-000001/extra/added.WEBP"  # subfolder and upper-case extension: SimpleTuner finds it anyway
    (out / "data" / name).parent.mkdir()
    shutil.copy(source, out / "data" / name)
    (out / "data" / name).with_suffix(".txt").write_text("a caption")
    return name


def edit_parquet_path(out: Path) -> str:
    edit_entry(out, parquet_path="/nonexistent/dalle3.parquet")
    return "parquet.path /nonexistent/dalle3.parquet does not exist"


def relative_instance_dir(out: Path) -> str:
    edit_entry(out, instance_data_dir="out/data")
    return "instance_data_dir 'out/data' is not absolute"


def pixel_entry_with_megapixel_sizes(out: Path) -> str:
    edit_entry(out, resolution_type="pixel", resolution=1024)  # maximum_image_size 2.0: SimpleTuner refuses it
    return "resolution_type pixel measures sizes in pixels"


def invalid_dataloader_json(out: Path) -> str:
    (out / "multidatabackend.json").write_text('[{"id": "dalle3",')
    return "is not valid JSON"


def empty_parquet_caption(out: Path) -> str:
    rewrite_parquet(out, lambda t: set_cell(t, "caption", 7, " "))
    return filenames(out)[7]


def zero_width(out: Path) -> str:
    rewrite_parquet(out, lambda t: set_cell(t, "width", 8, 0))
    return filenames(out)[8]


def duplicate_row(out: Path) -> str:
    rewrite_parquet(out, lambda t: pa.concat_tables([t, t.slice(2, 1)]))
    return filenames(out)[2]


def change_record_count(out: Path) -> str:
    path = out / ".dalle3-etl" / "shards" / "data-000001.json"
    record = orjson.loads(path.read_bytes())
    record["samples"] += 2
    path.write_bytes(orjson.dumps(record))
    return "data-000001:"


def leave_temp_file(out: Path) -> str:
    (out / ".dalle3.parquet.tmp-4242").write_bytes(b"partial")
    return ".dalle3.parquet.tmp-4242"


def leave_staging(out: Path) -> str:
    (out / ".dalle3-etl" / "staging" / "data-000001" / "files").mkdir(parents=True)
    return "data-000001 (unfinished shard)"


def leave_state_temp_file(out: Path) -> str:
    (out / ".dalle3-etl" / "shards" / ".data-000001.json.tmp-77").write_bytes(b"{")
    return ".data-000001.json.tmp-77"


def entry_of_another_output(out: Path) -> str:
    """A copied output: its entry still names the original (here: a sibling copy of the data)."""
    other = out.parent / "original"
    shutil.copytree(out / "data", other / "data")
    shutil.copy(out / "dalle3.parquet", other / "dalle3.parquet")
    edit_entry(out, instance_data_dir=str(other / "data"), parquet_path=str(other / "dalle3.parquet"))
    return "not this output's"


def empty_parquet(out: Path) -> str:
    rewrite_parquet(out, lambda t: t.slice(0, 0))
    return "0 rows"


BREAKAGES = {
    "delete an image": (delete_image, {"missing_image"}),
    "delete a caption file": (delete_caption_file, {"missing_caption_file"}),
    "empty a caption file": (empty_caption_file, {"empty_caption_file"}),
    "newline in a caption file": (multiline_caption_file, {"multiline_caption_file"}),
    "add an image with no row": (add_image_without_row, {"image_without_row"}),
    "edit the entry's parquet path": (edit_parquet_path, {"dataloader"}),
    "relative instance_data_dir": (relative_instance_dir, {"dataloader"}),
    "invalid dataloader JSON": (invalid_dataloader_json, {"dataloader"}),
    "pixel entry with megapixel sizes": (pixel_entry_with_megapixel_sizes, {"dataloader"}),
    "empty caption in the parquet": (empty_parquet_caption, {"empty_caption"}),
    "zero width": (zero_width, {"bad_size"}),
    "two rows for one image": (duplicate_row, {"duplicate_row", "shard_rows"}),
    "record count differs": (change_record_count, {"shard_rows"}),
    "temporary file": (leave_temp_file, {"stray_file"}),
    "staging left": (leave_staging, {"stray_file"}),
    "temporary file in the state folder": (leave_state_temp_file, {"stray_file"}),
    "entry of another (copied) output": (entry_of_another_output, {"dataloader"}),
    "parquet with no rows": (empty_parquet, {"parquet", "image_without_row", "shard_rows"}),
}


@pytest.mark.parametrize("what", list(BREAKAGES))
def test_breakage_fails_naming_the_problem(out, what):
    breakage, expected = BREAKAGES[what]
    detail = breakage(out)
    code, report = run_verify(out)
    assert code == 1
    assert not report["ok"]
    assert set(report["problems"]) == expected
    named = [example for code in sorted(expected) for example in check(report, code)["examples"]]
    assert all(check(report, code)["count"] >= 1 for code in expected)
    assert any(detail in example for example in named), named
    # the human report names the check and the offending path too
    text = runner.invoke(app, ["verify", str(out)], env={"COLUMNS": "250"})
    assert text.exit_code == 1
    assert sorted(expected)[0] in text.stdout and detail in text.stdout and "FAILED" in text.stdout


def test_deleting_an_image_keeps_the_row_checks_going(out):
    """One missing image: the row check fails; every other image still has its row and caption."""
    delete_image(out)
    _, report = run_verify(out)
    assert check(report, "missing_image")["count"] == 1
    assert report["counts"]["images_on_disk"] == report["counts"]["rows"] - 1


def test_examples_are_capped_and_counted(out):
    names = filenames(out)[:15]
    for name in names:
        (out / "data" / Path(name).with_suffix(".txt")).unlink()
    code, report = run_verify(out)
    assert code == 1
    missing = check(report, "missing_caption_file")
    assert missing["count"] == 15 and len(missing["examples"]) == 10
    text = runner.invoke(app, ["verify", str(out)], env={"COLUMNS": "200"}).stdout
    assert "... and 5 more" in text


def test_without_deep_a_sample_of_headers_finds_sizes_wrong_on_every_row(out, monkeypatch):
    """Sizes taken from the wrong JSON fields (img2dataset's original_width/height) are wrong on every row."""
    monkeypatch.setattr(verify_module, "HEADER_SAMPLE", 10)  # 60 rows: rows 0, 6, 12, ... are read
    rewrite_parquet(
        out, lambda t: t.set_column(t.schema.get_field_index("width"), "width", pc.multiply(t.column("width"), 3))
    )
    code, report = run_verify(out)
    assert code == 1 and report["problems"] == ["header_size"]
    assert check(report, "header_size")["count"] == 10


def test_deep_catches_a_changed_width_the_sample_does_not_read(out, monkeypatch):
    monkeypatch.setattr(verify_module, "HEADER_SAMPLE", 10)
    name = filenames(out)[9]
    rewrite_parquet(out, lambda t: set_cell(t, "width", 9, t.column("width")[9].as_py() + 1))
    code, report = run_verify(out)
    assert code == 0, report["problems"]  # row 9 is not in the sample
    assert check(report, "header_size")["status"] == "ok"
    code, report = run_verify(out, "--deep")
    assert code == 1
    assert report["problems"] == ["header_size"]
    header = check(report, "header_size")
    assert header["count"] == 1 and header["examples"][0].startswith(f"{name}: row says")


def test_deep_catches_an_unreadable_image(out):
    name = filenames(out)[10]
    (out / "data" / name).write_bytes(b"not an image")
    code, report = run_verify(out, "--deep")
    assert code == 1 and report["problems"] == ["header_size"]
    assert "header cannot be read" in check(report, "header_size")["examples"][0]


def test_missing_parquet_skips_row_checks(out):
    (out / "dalle3.parquet").unlink()
    code, report = run_verify(out)
    assert code == 1
    assert set(report["problems"]) == {"dataloader", "parquet"}
    assert check(report, "missing_image")["status"] == "skipped"
    assert check(report, "image_without_row")["status"] == "skipped"


def test_parquet_directory_is_refused(out):
    (out / "dalle3.parquet").unlink()
    (out / "dalle3.parquet").mkdir()
    pq.write_table(pa.table({"filename": ["x.jpg"]}), out / "dalle3.parquet" / "part-0.parquet")
    code, report = run_verify(out)
    assert code == 1
    assert "ONE parquet file" in check(report, "parquet")["examples"][0]


def test_missing_column_is_named(out):
    rewrite_parquet(out, lambda t: t.drop_columns(["height"]))
    code, report = run_verify(out)
    assert code == 1 and report["problems"] == ["parquet"]
    assert "no column 'height'" in check(report, "parquet")["examples"][0]


def test_parquet_caption_strategy_needs_no_caption_files(out):
    edit_entry(out, caption_strategy="parquet")
    for txt in (out / "data").rglob("*.txt"):
        txt.unlink()
    code, report = run_verify(out)
    assert code == 0, report["problems"]
    assert check(report, "missing_caption_file")["status"] == "skipped"


def test_not_an_output_dir_is_a_usage_error(tmp_path):
    (tmp_path / "plain").mkdir()
    for target in (tmp_path / "plain", tmp_path / "absent"):
        result = runner.invoke(app, ["verify", str(target)])
        assert result.exit_code == 2
        assert "not a dalle3-etl output directory" in result.output


def test_null_caption_counts_as_empty(out):
    def null_caption(table: pa.Table) -> pa.Table:
        schema = table.schema.set(1, pa.field("caption", pa.string(), nullable=True))
        table = table.cast(schema)
        mask = pc.equal(pa.array(range(table.num_rows)), 0)
        return table.set_column(1, schema.field(1), pc.if_else(mask, pa.scalar(None, pa.string()), table["caption"]))

    rewrite_parquet(out, null_caption)
    code, report = run_verify(out)
    assert code == 1 and report["problems"] == ["empty_caption"]
    assert check(report, "empty_caption")["count"] == 1


# --- verify tells the truth (safety issue, point 11) ---------------------------------------------------


def test_a_copied_output_is_checked_itself_not_the_original(converted, tmp_path):
    """`cp -a OUT COPY`, break COPY: verify COPY fails, for the entry and for the broken image."""
    copy = tmp_path / "copy"
    shutil.copytree(converted[0], copy)  # the entry still names the original
    name = filenames(copy)[3]
    (copy / "data" / name).unlink()
    code, report = run_verify(copy)
    assert code == 1
    assert set(report["problems"]) == {"dataloader", "missing_image"}
    assert any(name in example for example in check(report, "missing_image")["examples"])
    assert f"`dalle3-etl entry {copy}`" in " ".join(check(report, "dataloader")["examples"])  # names the fix


def test_an_image_named_like_a_temporary_file_is_not_flagged(out):
    source = out / "data" / filenames(out)[0]
    odd = out / "data" / "data-000000" / ".x.tmp-1.jpg"  # a legitimate member name
    shutil.copy(source, odd)
    odd.with_suffix(".txt").write_text("a caption")
    code, report = run_verify(out)
    assert set(report["problems"]) == {"image_without_row"}  # it has no row, but it is no stray temporary
    assert check(report, "stray_file")["status"] == "ok"


def test_verify_says_when_a_run_is_in_progress(out):
    from dalle3_etl.store.locks import RunLock

    layout = Layout(out)
    code, report = run_verify(out)
    assert code == 0 and report["running"] is None
    with RunLock(layout.lock):
        code, report = run_verify(out)
        text = runner.invoke(app, ["verify", str(out)], env={"COLUMNS": "250"}).output
    assert report["running"] and str(os.getpid()) in report["running"]
    assert "in progress" in text
