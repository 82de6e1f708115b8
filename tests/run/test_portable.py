"""`run.portable.rewrite_entry`: a copied or moved output gets an entry for where it is (or will be mounted)."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dalle3_etl.check.verify import verify
from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import SynthSpec, write_corpus
from dalle3_etl.run.portable import rewrite_entry
from dalle3_etl.settings import SettingsError

SPEC = SynthSpec(shards=2, per_shard=12, seed=11, image_bytes=1500)
CONFIG = """
[simpletuner]
id = "mine"
resolution = 1024
resolution_type = "pixel"
maximum_image_size = 1536
target_downsample_size = 1280
minimum_image_size = 768
cache_dir_vae = "caches/vae"
"""


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """An output converted with its own SimpleTuner settings (a cache folder inside OUT among them)."""
    root = tmp_path_factory.mktemp("portable")
    write_corpus(root / "src", SPEC)
    (root / "st.toml").write_text(CONFIG)
    args = ["convert", str(root / "src"), "-o", str(root / "out"), "-q", "-w", "1", "--config", str(root / "st.toml")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return root / "out"


@pytest.fixture
def copy(converted, tmp_path) -> Path:
    dst = tmp_path / "moved" / "out"
    shutil.copytree(converted, dst, symlinks=True)
    return dst


def entry(out: Path) -> list[dict]:
    return orjson.loads((out / "multidatabackend.json").read_bytes())


def test_a_copy_gets_an_entry_for_its_own_place_and_verifies(copy):
    assert not verify(copy).ok  # the entry still names the original
    rewrite_entry(copy)
    image, text = entry(copy)
    here = copy.resolve()
    assert image["instance_data_dir"] == str(here / "data")
    assert image["parquet"]["path"] == str(here / "dalle3.parquet")
    assert image["cache_dir_vae"] == str(here / "caches" / "vae")  # the folder set inside OUT moved with it
    assert text["cache_dir"] == str(here / "cache" / "text" / "mine")
    assert (image["id"], image["resolution"], image["resolution_type"]) == ("mine", 1024.0, "pixel")  # kept
    report = verify(copy)
    assert report.ok, [c for c in report.checks.values() if c.status == "failed"]
    # SimpleTuner's rule: every image is instance_data_dir + "/" + its filename, and exists there
    for name in pq.read_table(image["parquet"]["path"], columns=["filename"]).column("filename").to_pylist():
        assert Path(image["instance_data_dir"], name).is_file()


def test_mount_path_puts_every_path_under_it_and_verify_checks_it_there(copy):
    rewrite_entry(copy, mount_path=Path("/mnt/train/ds"))
    image, text = entry(copy)
    for path in (image["instance_data_dir"], image["parquet"]["path"], image["cache_dir_vae"], text["cache_dir"]):
        assert path.startswith("/mnt/train/ds/")
    assert verify(copy, mount_path=Path("/mnt/train/ds")).ok
    assert verify(copy, mount_path=Path("/mnt/train/ds/")).ok  # the same path written with a trailing slash
    assert not verify(copy).ok  # here the entry names a place OUT is not
    other = verify(copy, mount_path=Path("/mnt/other"))
    assert other.checks["dataloader"].status == "failed"
    assert any("not under the mount path /mnt/other" in e for e in other.checks["dataloader"].examples)


def test_changed_settings_are_written_and_the_pinned_ones_are_untouched(copy):
    manifest = (copy / ".dalle3-etl" / "manifest.json").read_bytes()
    sizes = {"maximum_image_size": 2.0, "target_downsample_size": 1.75, "minimum_image_size": 0.25}  # megapixels
    rewrite_entry(
        copy, resolution=0.5, resolution_type="area", crop=True, crop_style="center", repeats=3, id="b", **sizes
    )
    image, text = entry(copy)
    assert (image["resolution"], image["resolution_type"], image["crop"], image["crop_style"], image["repeats"]) == (
        0.5,
        "area",
        True,
        "center",
        3,
    )
    assert "crop_aspect" not in image  # not set: left to SimpleTuner's default
    assert image["id"] == "b" and text["id"] == "b-text-embeds"
    assert text["cache_dir"] == str(copy.resolve() / "cache" / "text" / "b")  # the default folder follows the id
    assert (copy / ".dalle3-etl" / "manifest.json").read_bytes() == manifest
    rewrite_entry(copy)
    assert entry(copy)[0]["repeats"] == 3  # a later `entry` keeps what the last one wrote


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"resolution": -1.0}, "--resolution -1.0: must be more than 0"),
        ({"crop_style": "diagonal"}, "--crop-style diagonal: must be one of"),
        ({"repeats": -2}, "--repeats -2: must be at least 0"),
        ({"id": "a/b"}, "--id a/b: must be a name"),
        ({"id": "a\u009bb"}, "must be a name usable as a folder name"),  # a C1 control character
        # the entry's sizes are pixels: megapixels for area would stop SimpleTuner at start-up
        ({"resolution_type": "area", "resolution": 1.0}, "maximum_image_size 1536, .* look like pixels"),
        ({"maximum_image_size": 2.0}, "resolution_type pixel measures sizes in pixels, but maximum_image_size 2 "),
        ({"resolution_type": "pixel_area", "resolution": 1.0}, "pixel_area takes resolution as a pixel edge"),
    ],
)
def test_a_bad_setting_is_refused_and_the_entry_left_as_it_was(copy, changes, named):
    before = (copy / "multidatabackend.json").read_bytes()
    with pytest.raises(SettingsError, match=named):
        rewrite_entry(copy, **changes)
    assert (copy / "multidatabackend.json").read_bytes() == before


def test_an_unknown_key_in_the_simpletuner_table_is_refused(copy, tmp_path):
    (tmp_path / "bad.toml").write_text("[simpletuner]\nresolutoin = 2\n")
    before = (copy / "multidatabackend.json").read_bytes()
    with pytest.raises(SettingsError, match="unknown setting 'resolutoin'"):
        rewrite_entry(copy, config=tmp_path / "bad.toml")
    assert (copy / "multidatabackend.json").read_bytes() == before


def test_entry_on_an_unmoved_default_output_writes_the_same_bytes(tmp_path):
    write_corpus(tmp_path / "src", SynthSpec(shards=1, per_shard=5, seed=2, image_bytes=1000))
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "src"), "-o", str(tmp_path / "out"), "-q", "-w", "1"])
    assert result.exit_code == 0, result.output
    before = (tmp_path / "out" / "multidatabackend.json").read_bytes()
    assert b"crop" not in before and b"repeats" not in before  # entries of runs without the new options as before
    rewrite_entry(tmp_path / "out")
    assert (tmp_path / "out" / "multidatabackend.json").read_bytes() == before


def test_entry_is_refused_while_a_convert_holds_out(copy):
    """A convert run rewrites the entry and the imagefolder at its end: `entry` is refused (exit 2 through the
    CLI) while one holds OUT, and the entry is left as it was."""
    from dalle3_etl.store.layout import Layout, StateError
    from dalle3_etl.store.locks import RunLock

    layout = Layout(copy)
    before = layout.dataloader_config.read_bytes()
    with RunLock(layout.lock):
        with pytest.raises(StateError, match="another dalle3-etl run"):
            rewrite_entry(copy, also=("imagefolder",))
        result = CliRunner().invoke(app, ["entry", str(copy)])
        assert result.exit_code == 2 and "another dalle3-etl run" in result.output
    assert layout.dataloader_config.read_bytes() == before
    assert not layout.imagefolder_metadata.exists()
    rewrite_entry(copy, also=("imagefolder",))  # once it is free
    assert layout.imagefolder_metadata.exists()
