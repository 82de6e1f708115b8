"""SimpleTuner's caches of an output (`store.generation`, `run.entry.entry_generation`): SimpleTuner trusts its
bucket/metadata caches and VAE latents for every image name it has seen (checked with SimpleTuner 4.10.1's start-up
code: a re-converted shard kept its old sizes and buckets). The entry names new caches exactly when images it may
have cached changed or the settings that decide sizes did, and names the old ones to the user without removing
them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import orjson
from conftest import convert
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import SynthSpec, write_corpus


def image_entry(out: Path) -> dict:
    return orjson.loads((out / "multidatabackend.json").read_bytes())[0]


def caches(out: Path) -> tuple[str, str]:
    image = image_entry(out)
    return image["cache_file_suffix"], image["cache_dir_vae"]


def simpletuner_trains(out: Path) -> list[Path]:
    """What SimpleTuner leaves after a start: bucket caches in instance_data_dir, latents in cache_dir_vae."""
    image = image_entry(out)
    made = [
        Path(image["instance_data_dir"]) / f"aspect_ratio_bucket_{k}_{image['cache_file_suffix']}.json"
        for k in ("indices", "metadata")
    ]
    for path in made:
        path.write_bytes(b"{}")
    vae = Path(image["cache_dir_vae"]) / "data-000000"
    vae.mkdir(parents=True)
    (vae / "latent.pt").write_bytes(b"x")
    return [*made, Path(image["cache_dir_vae"])]


def test_adding_shards_keeps_the_caches_and_a_changed_shard_gets_new_ones(tmp_path):
    corpus, src = tmp_path / "corpus", tmp_path / "src"
    write_corpus(corpus, SynthSpec(shards=2, per_shard=6, seed=1, image_bytes=800))
    src.mkdir()
    shutil.copy2(corpus / "data-000000.tar", src)
    out = tmp_path / "out"
    assert convert([src], out, workers=1).exit_code == 0
    before = caches(out)
    old = simpletuner_trains(out)
    shutil.copy2(corpus / "data-000001.tar", src)
    summary = convert([src], out, workers=1)  # one more shard: SimpleTuner adds its images itself
    assert summary.exit_code == 0 and caches(out) == before and summary.stale_caches == []
    other = tmp_path / "other"  # the first shard's tar changes: same image names, other images
    write_corpus(other, SynthSpec(shards=1, per_shard=6, seed=9, image_bytes=800))
    shutil.copy2(other / "data-000000.tar", src / "data-000000.tar")
    summary = convert([src], out, workers=1)
    assert summary.exit_code == 0
    after = caches(out)
    assert after[0] != before[0] and after[1] != before[1]
    assert summary.stale_caches == sorted(old)  # named, and left as they are
    assert all(p.exists() for p in old)
    assert any("no longer read" in line for line in summary.notices())


def test_entry_with_other_sizes_names_new_caches_and_the_same_input_the_same_ones(tmp_path):
    src = tmp_path / "src"
    write_corpus(src, SynthSpec(shards=1, per_shard=6, seed=1, image_bytes=800))
    one, two = tmp_path / "one", tmp_path / "two"
    assert convert([src], one, workers=1).exit_code == 0
    assert convert([src], two, workers=2).exit_code == 0
    assert caches(one)[0] == caches(two)[0]
    old = simpletuner_trains(one)
    result = CliRunner().invoke(app, ["entry", str(one), "--resolution", "0.5", "--minimum-image-size", "0.25"])
    assert result.exit_code == 0, result.output
    assert caches(one)[0] != caches(two)[0] and "no longer read" in result.output
    assert all(p.exists() for p in old)
    result = CliRunner().invoke(app, ["entry", str(one), "--id", "dalle3"])  # nothing that decides sizes changed
    assert result.exit_code == 0 and "no longer read" not in result.output


def test_restart_names_new_caches_for_the_new_output(tmp_path):
    src = tmp_path / "src"
    write_corpus(src, SynthSpec(shards=1, per_shard=6, seed=1, image_bytes=800))
    out = tmp_path / "out"
    assert convert([src], out, workers=1).exit_code == 0
    before = caches(out)
    result = CliRunner().invoke(app, ["convert", str(src), "-o", str(out), "-q", "-w", "1", "--restart"])
    assert result.exit_code == 0, result.output
    assert caches(out)[0] != before[0]  # --restart may give the names other images (--flat, filters, inputs)


def _run(src: Path, out: Path, *more: str, crash: str | None = None):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DALLE3_ETL_TEST_CRASH"}
    if crash:
        env["DALLE3_ETL_TEST_CRASH"] = crash
    args = [sys.executable, "-m", "dalle3_etl", "convert", str(src), "-o", str(out), "-q", "-w", "1", *more]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, start_new_session=True)


def test_a_redo_resumed_after_a_kill_counts_once(tmp_path):
    src = tmp_path / "src"
    write_corpus(src, SynthSpec(shards=2, per_shard=8, seed=1, image_bytes=800))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for out in (whole, killed):
        assert _run(src, out).returncode == 0
    for tar in src.iterdir():  # the inputs change (mtime): both shards are converted again
        os.utime(tar, ns=(tar.stat().st_atime_ns, tar.stat().st_mtime_ns + 10**9))
    assert _run(src, whole).returncode == 0
    assert _run(src, killed, crash="sample:data-000000:3").returncode != 0  # killed in the redo
    assert _run(src, killed).returncode == 0
    assert caches(killed)[0] == caches(whole)[0]
    assert _run(src, killed, "--restart", crash="restart:data-000000").returncode != 0
    assert _run(src, killed, "--restart").returncode == 0
    assert _run(src, whole, "--restart").returncode == 0
    assert caches(killed)[0] == caches(whole)[0]


def test_only_caches_in_out_of_an_earlier_generation_are_named(tmp_path):
    src = tmp_path / "src"
    write_corpus(src, SynthSpec(shards=1, per_shard=6, seed=1, image_bytes=800))
    out = tmp_path / "out"
    assert convert([src], out, workers=1).exit_code == 0
    simpletuner_trains(out)
    # an entry written by an earlier version: no cache_file_suffix, the VAE cache right under cache/vae/<id>
    entries = orjson.loads((out / "multidatabackend.json").read_bytes())
    del entries[0]["cache_file_suffix"]
    entries[0]["cache_dir_vae"] = str(out.resolve() / "cache" / "vae" / "dalle3")
    (out / "multidatabackend.json").write_bytes(orjson.dumps(entries))
    summary = convert([src], out, workers=1)
    assert summary.exit_code == 0 and summary.stale_caches == []  # not cache/vae/dalle3: the live one is in it
    result = CliRunner().invoke(app, ["entry", str(out), "--mount-path", "/mnt/train/out"])
    assert result.exit_code == 0 and "no longer read" not in result.output  # the same caches, read there
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, symlinks=True)
    result = CliRunner().invoke(app, ["entry", str(copy)])
    assert result.exit_code == 0 and "no longer read" not in result.output


def test_entry_keeps_a_cache_folder_of_the_users_under_the_default_one(tmp_path):
    src = tmp_path / "src"
    write_corpus(src, SynthSpec(shards=1, per_shard=4, seed=1, image_bytes=800))
    config = tmp_path / "cv.toml"
    config.write_text(
        '[simpletuner]\ncache_dir_vae = "cache/vae/dalle3/flux"\ncache_dir_text = "cache/text/dalle3/flux"\n'
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["convert", str(src), "-o", str(out), "-q", "-w", "1", "--config", str(config)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["entry", str(out)])
    assert result.exit_code == 0, result.output
    entries = orjson.loads((out / "multidatabackend.json").read_bytes())
    assert entries[0]["cache_dir_vae"] == str(out.resolve() / "cache" / "vae" / "dalle3" / "flux")
    assert entries[1]["cache_dir"] == str(out.resolve() / "cache" / "text" / "dalle3" / "flux")
