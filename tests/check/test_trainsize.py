"""`verify`'s train_size check: the rows SimpleTuner will skip as smaller than the entry's minimum_image_size,
counted by SimpleTuner's own rule (area: megapixels, and a shortest side with a square crop; pixel: each side)."""

from __future__ import annotations

import math
import random

import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from dalle3_etl.check.trainsize import count_too_small, rule
from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import write_img2dataset_corpus

runner = CliRunner()


def cli(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})
    return result.exit_code, result.output


def simpletuner_skips(w: int, h: int, entry: dict) -> bool:
    """SimpleTuner's meets_resolution_requirements (metadata/backends/base.py), negated, restated."""
    minimum = entry["minimum_image_size"]
    if entry["resolution_type"] == "pixel":
        return not (minimum <= w and minimum <= h)
    pixels = minimum * 1_000_000
    if entry.get("crop", False) and entry.get("crop_aspect", "square") == "square":
        edge = math.floor(math.sqrt(pixels))
        if not (edge <= w and edge <= h):
            return True
    return not pixels <= w * h


def test_count_matches_simpletuners_rule(tmp_path):
    rng = random.Random(5)
    sizes = [(rng.randint(1, 2400), rng.randint(1, 2400)) for _ in range(3000)] + [(1000, 750), (866, 866)]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"w": [s[0] for s in sizes], "h": [s[1] for s in sizes]}), path, row_group_size=700)
    entries = [
        {"resolution_type": "area", "minimum_image_size": 0.75},
        {"resolution_type": "area", "minimum_image_size": 0.75, "crop": True},
        {"resolution_type": "area", "minimum_image_size": 0.75, "crop": True, "crop_aspect": "preserve"},
        {"resolution_type": "pixel", "minimum_image_size": 512},
        {"resolution_type": "pixel", "minimum_image_size": 511.5},
    ]
    for entry in entries:
        want = sum(simpletuner_skips(w, h, entry) for w, h in sizes)
        assert count_too_small(pq.ParquetFile(path), "w", "h", rule(entry)) == want, entry
    assert rule({"resolution_type": "pixel_area", "minimum_image_size": 512}) is None
    assert rule({"resolution_type": "area"}) is None


def test_verify_warns_when_simpletuner_would_skip_every_row_and_entry_fixes_it(tmp_path):
    shards = tmp_path / "shards"
    write_img2dataset_corpus(shards, shards=1, per_shard=20, seed=1)  # img2dataset's small images
    out = tmp_path / "out"
    assert cli("convert", shards, "-o", out, "--caption-field", "txt", "-w", "1", "-q")[0] == 0
    code, log = cli("verify", out)
    assert code == 0, log
    assert "train_size" in log and "SimpleTuner skips them all" in log and "--minimum-image-size" in log
    assert "OK, with warnings" in log and "SimpleTuner can start" not in log
    import re

    suggested = re.search(r"--minimum-image-size ([0-9.]+)`", " ".join(log.split())).group(1)  # the fix it names
    assert cli("entry", out, "--minimum-image-size", suggested)[0] == 0
    code, log = cli("verify", out)
    assert code == 0 and "SimpleTuner can start on this output" in log and "warning" not in log
