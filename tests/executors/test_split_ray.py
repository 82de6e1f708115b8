"""Split shards on the Ray executor (issue 18): tasks of a shard run as Ray tasks, the output is the local one's."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tree

from dalle3_etl.devtools.synth import SynthSpec, write_corpus
from dalle3_etl.run.pipeline import Reporter, run_convert
from dalle3_etl.settings import Settings, load_settings
from dalle3_etl.shard.scan import choose_points, scan_tar
from dalle3_etl.sources.resolve import resolve_inputs


class Progress(Reporter):
    def __init__(self):
        self.seen: list[tuple[str, int]] = []

    def progress(self, shard_id: str, nbytes: int, samples: int) -> None:
        self.seen.append((shard_id, nbytes))


def _user_view(out: Path) -> dict:
    state = ".dalle3-etl/"
    keep = (f"{state}shards/", f"{state}parts/", f"{state}rejects/")
    files = {k: v for k, v in tree(out).items() if not k.startswith(state) or k.startswith(keep)}
    files["multidatabackend.json"] = files["multidatabackend.json"].replace(str(out).encode(), b"<OUT>")
    return files


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, object_store_memory=128 << 20, logging_level="warning"
    )
    try:
        yield ray
    finally:
        ray.shutdown()


def test_a_split_shard_on_ray_gives_the_local_whole_shard_bytes(ray_instance, tmp_path):
    root = tmp_path / "in"
    write_corpus(root, SynthSpec(shards=2, per_shard=40, seed=3, image_bytes=1500))
    sources = resolve_inputs([str(root)])
    for src in sources:  # each shard is cut into several tasks
        with open(src.uri, "rb") as fh:
            assert len(choose_points(scan_tar(fh, src.size, Settings()), 30_000)) >= 2
    whole = tmp_path / "whole"
    run_convert(sources, whole, load_settings(None, workers=1))
    split = tmp_path / "split"
    progress = Progress()
    summary = run_convert(
        sources, split, load_settings(None, workers=2, task_bytes=30_000), executor="ray", reporter=progress
    )
    assert summary.exit_code == 0
    assert _user_view(split) == _user_view(whole)
    # progress is reported per shard (the tasks' bytes summed), never per task, and never above the shard's size
    sizes = {src.shard_id: src.size for src in sources}
    assert {sid for sid, _ in progress.seen} <= set(sizes)
    assert all(0 <= nbytes <= sizes[sid] for sid, nbytes in progress.seen)


def test_a_guess_that_does_not_hold_is_converted_again_whole_on_ray(ray_instance, tmp_path):
    from badinput_helpers import img, js, tar_bytes

    from dalle3_etl.shard.probe import probe_points

    pairs = [m for i in range(40) for m in ((f"s{i:02d}.jpg", img(nbytes=700)), (f"s{i:02d}.json", js()))]
    root = tmp_path / "in"
    root.mkdir()
    (root / "data-000000.tar").write_bytes(tar_bytes(pairs + [("s03.json", js("again"))]))  # a late duplicate
    sources = resolve_inputs([str(root)])
    whole = tmp_path / "whole"
    run_convert(sources, whole, load_settings(None, workers=1))
    task_bytes = sources[0].size // 3
    with open(sources[0].uri, "rb") as fh:
        assert probe_points(fh, sources[0].size, Settings(task_bytes=task_bytes))  # guessed, not scanned
    split = tmp_path / "split"
    summary = run_convert(sources, split, load_settings(None, workers=2, task_bytes=task_bytes), executor="ray")
    assert list(summary.redone_whole) == ["data-000000"]
    assert _user_view(split) == _user_view(whole)
