"""run.webshart: what the indexes hold and when they are written; the hidden part columns change nothing else;
the settings and the Hub inputs of --webshart."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from badinput_helpers import img, js, member_offsets, tar_bytes
from conftest import convert
from fakehub import FakeHub, files_from_dir, hub_env  # noqa: F401  (fixture)
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.settings import Settings, SettingsError, load_settings
from dalle3_etl.shard.sinks import part_schema, schema_for
from dalle3_etl.store.layout import Layout


def _shards(root, captions=("one", "two")):
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for i, caption in enumerate(captions):
        items += [(f"k{i}.jpg", img("jpeg", 64, 48)), (f"k{i}.json", js(caption, long_caption="longer " + caption))]
    (root / "data-000000.tar").write_bytes(tar_bytes(items))
    return root / "data-000000.tar"


def test_index_holds_offsets_lengths_sizes_and_captions(tmp_path):
    tar = _shards(tmp_path / "src")
    out = tmp_path / "out"
    convert([tar], out, webshart=True, workers=1, extra_captions=("long_caption",))
    index = orjson.loads((out / "webshart" / "data-000000.json").read_bytes())
    offsets = member_offsets(tar.read_bytes())
    assert index["path"] == "data-000000.tar" and index["filesize"] == tar.stat().st_size
    assert index["includes_image_geometry"] is True
    assert list(index["files"]) == ["k0.jpg", "k1.jpg"]  # member order, no .json member
    for name, caption in (("k0.jpg", "one"), ("k1.jpg", "two")):
        entry = index["files"][name]
        data = tar.read_bytes()[entry["offset"] : entry["offset"] + entry["length"]]
        assert entry["offset"] == offsets[name][1] and data[:2] == b"\xff\xd8"
        assert (entry["width"], entry["height"], entry["aspect"]) == (64, 48, 64 / 48)
        assert entry["captions"] == [caption, "longer " + caption]


def test_the_parquet_is_the_parquet_only_modes_and_other_parts_have_no_hidden_columns(tmp_path):
    tar = _shards(tmp_path / "src")
    convert([tar], tmp_path / "ws", webshart=True, workers=1)
    convert([tar], tmp_path / "pq", images=False, captions=False, workers=1)
    assert (tmp_path / "ws" / "dalle3.parquet").read_bytes() == (tmp_path / "pq" / "dalle3.parquet").read_bytes()
    assert part_schema(Settings()) == schema_for(Settings())
    assert part_schema(Settings(dedup="md5")).names[-1] == "_dedup"
    hidden = pq.read_schema(Layout(tmp_path / "ws").part("data-000000")).names[-2:]
    assert hidden == ["_offset", "_length"]


def _entry(out) -> dict:
    return orjson.loads((out / "multidatabackend.json").read_bytes())[0]


def test_rewritten_only_when_bytes_change_and_then_simpletuner_gets_new_caches(tmp_path):
    """SimpleTuner reads its caches (webshart's metadata, its buckets and captions, VAE latents keyed by shard and
    sample number) before the indexes: changed indexes must never meet the caches of the old ones."""
    src = tmp_path / "src"
    tar = _shards(src)
    out = tmp_path / "out"
    convert([tar], out, webshart=True, workers=1)
    index = out / "webshart" / "data-000000.json"
    first = _entry(out)
    caches = [Path(first["webshart"]["cache_dir"]), Path(first["cache_dir_vae"])]
    assert all(p.is_relative_to(out / "cache") for p in caches)
    for cache in caches:  # what SimpleTuner writes there while it trains
        cache.mkdir(parents=True)
        (cache / "aspect_ratio_bucket_indices_dalle3.json").write_bytes(b"{}")
    before = index.stat().st_mtime_ns
    summary = convert([tar], out, webshart=True, workers=1)  # nothing changed: not rewritten, same caches
    assert index.stat().st_mtime_ns == before and _entry(out) == first
    assert summary.webshart.written == [] and summary.stale_caches == []
    _shards(src, captions=("one", "a new caption"))  # the tar changed: redone, re-indexed, new caches
    summary = convert([tar], out, webshart=True, workers=1)
    assert summary.webshart.written == ["data-000000"]
    second = _entry(out)
    assert Path(second["webshart"]["cache_dir"]) != caches[0] and Path(second["cache_dir_vae"]) != caches[1]
    assert summary.stale_caches == sorted(caches)  # named for the user, not removed (SimpleTuner's files)
    assert all((p / "aspect_ratio_bucket_indices_dalle3.json").exists() for p in caches)
    assert orjson.loads(index.read_bytes())["files"]["k1.jpg"]["captions"] == "a new caption"
    one, two = tmp_path / "one", tmp_path / "two"  # the same input, the same cache names
    convert([tar], one, webshart=True, workers=1)
    convert([tar], two, webshart=True, workers=2)
    assert Path(_entry(one)["webshart"]["cache_dir"]).name == Path(_entry(two)["webshart"]["cache_dir"]).name


def test_restart_removes_the_indexes(tmp_path):
    tar = _shards(tmp_path / "src")
    out = tmp_path / "out"
    convert([tar], out, webshart=True, workers=1)
    convert([tar], out, workers=1, restart_run=True)
    assert not (out / "webshart" / "data-000000.json").exists()
    assert not Layout(out).webshart_tars.exists()


def test_settings(tmp_path):
    settings = load_settings(None, webshart=True)
    assert (settings.images, settings.captions, settings.webshart) == (False, False, True)
    assert settings.output_fingerprint()["webshart"] is True
    assert "webshart" not in Settings().output_fingerprint()  # pinned only when set
    config = tmp_path / "c.toml"
    config.write_text("[convert]\nwebshart = true\n")
    assert load_settings(config).webshart is True
    for flag in ("images", "captions", "flat"):
        with pytest.raises(SettingsError, match=f"leave out --{flag}"):
            load_settings(None, webshart=True, **{flag: True})
    with pytest.raises(SettingsError, match="leave out --also"):
        load_settings(None, webshart=True, also=("imagefolder",))


def test_another_tar_folder_is_refused_for_the_same_output(tmp_path):
    first = _shards(tmp_path / "a")
    convert([first], tmp_path / "out", webshart=True, workers=1)
    other = tmp_path / "b"
    other.mkdir()
    shutil.copy(first, other / "data-000001.tar")
    result = CliRunner().invoke(app, ["convert", str(other), "-o", str(tmp_path / "out"), "--webshart"])
    assert result.exit_code == 2 and "ONE folder" in result.output


def test_hub_input_with_keep_tars_indexes_the_kept_tars(corpus, hub_env, tmp_path):  # noqa: F811
    root, _ = corpus
    keep = tmp_path / "tars"
    with FakeHub(files_from_dir(root)) as hub:
        hub_env.point_to(hub)
        args = ["convert", f"hf://datasets/{hub.repo_id}/data/*.tar", "-o", str(tmp_path / "hub"), "-w", "1"]
        result = CliRunner().invoke(app, [*args, "--webshart", "--keep-tars", str(keep)])
    assert result.exit_code == 0, result.output
    convert([root], tmp_path / "local", webshart=True, workers=1)
    for index in (tmp_path / "local" / "webshart").iterdir():
        assert (tmp_path / "hub" / "webshart" / index.name).read_bytes() == index.read_bytes()
    entry = orjson.loads((tmp_path / "hub" / "multidatabackend.json").read_bytes())[0]
    assert entry["source"] == str(keep.resolve())
    assert CliRunner().invoke(app, ["verify", str(tmp_path / "hub")]).exit_code == 0
