"""`dalle3-etl entry OUT` and `verify --mount-path` as a user runs them after copying an output."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import SynthSpec, write_corpus

runner = CliRunner()


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("entrycli")
    write_corpus(root / "src", SynthSpec(shards=2, per_shard=10, seed=3, image_bytes=1500))
    result = runner.invoke(app, ["convert", str(root / "src"), "-o", str(root / "out"), "-q", "-w", "2"])
    assert result.exit_code == 0, result.output
    return root / "out"


@pytest.fixture
def copy(converted, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(converted, dst, symlinks=True)
    return dst


def test_copy_verify_fails_naming_entry_then_entry_fixes_it(copy):
    result = runner.invoke(app, ["verify", str(copy)])
    assert result.exit_code == 1
    assert "dalle3-etl entry" in result.output
    result = runner.invoke(app, ["entry", str(copy)])
    assert result.exit_code == 0, result.output
    assert orjson.loads((copy / "multidatabackend.json").read_bytes())[0]["instance_data_dir"] == str(
        copy.resolve() / "data"
    )
    assert runner.invoke(app, ["verify", str(copy)]).exit_code == 0


def test_mount_path_entry_verifies_with_the_same_mount_path(copy):
    result = runner.invoke(app, ["entry", str(copy), "--mount-path", "/data/sets/dalle3", "--crop", "--repeats", "2"])
    assert result.exit_code == 0, result.output
    image = orjson.loads((copy / "multidatabackend.json").read_bytes())[0]
    assert image["instance_data_dir"] == "/data/sets/dalle3/data"
    assert (image["crop"], image["repeats"]) == (True, 2)
    assert runner.invoke(app, ["verify", str(copy), "--mount-path", "/data/sets/dalle3"]).exit_code == 0
    assert runner.invoke(app, ["verify", str(copy)]).exit_code == 1


def test_a_relative_mount_path_is_refused(copy):
    before = (copy / "multidatabackend.json").read_bytes()
    result = runner.invoke(app, ["entry", str(copy), "--mount-path", "rel/path"])
    assert result.exit_code == 2
    assert "--mount-path rel/path: must be absolute" in result.output
    assert (copy / "multidatabackend.json").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--resolution-type", "square"], "--resolution-type square: must be one of area, pixel, pixel_area"),
        (["--minimum-image-size", "-1"], "--minimum-image-size -1.0: must be at least 0"),
        (["--crop-aspect", "wide"], "--crop-aspect wide: must be one of"),
    ],
)
def test_a_bad_flag_exits_2_with_one_line_and_leaves_the_files(copy, args, named):
    entry_before = (copy / "multidatabackend.json").read_bytes()
    manifest = (copy / ".dalle3-etl" / "manifest.json").read_bytes()
    result = runner.invoke(app, ["entry", str(copy), *args])
    assert result.exit_code == 2
    assert named in result.output and len(result.output.strip().splitlines()) == 1
    assert (copy / "multidatabackend.json").read_bytes() == entry_before
    assert (copy / ".dalle3-etl" / "manifest.json").read_bytes() == manifest


def test_the_simpletuner_table_of_a_config_sets_values_and_convert_keys_are_not_applied(copy, tmp_path):
    manifest = (copy / ".dalle3-etl" / "manifest.json").read_bytes()
    (tmp_path / "c.toml").write_text('[convert]\ncaptions = false\n[simpletuner]\ncrop_aspect = "preserve"\n')
    result = runner.invoke(app, ["entry", str(copy), "--config", str(tmp_path / "c.toml")])
    assert result.exit_code == 0, result.output
    image = orjson.loads((copy / "multidatabackend.json").read_bytes())[0]
    assert image["crop_aspect"] == "preserve"
    assert image["caption_strategy"] == "textfile"  # OUT was converted with caption files: pinned, not changed
    assert (copy / ".dalle3-etl" / "manifest.json").read_bytes() == manifest


def test_entry_on_a_folder_that_is_not_an_output_exits_2(tmp_path):
    result = runner.invoke(app, ["entry", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a converted dalle3-etl output" in result.output
