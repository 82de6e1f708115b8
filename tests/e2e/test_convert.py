"""End to end: generated shards -> dalle3.parquet, data/<shard>/<image> + .txt, multidatabackend.json."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pandas as pd
import pyarrow.parquet as pq
from conftest import convert
from PIL import Image

from dalle3_etl.devtools.synth import SynthSpec, write_corpus

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp"}


def images_on_disk(data: Path) -> set[str]:
    return {str(p.relative_to(data)) for p in data.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS}


def test_every_row_equals_the_generator_truth(converted):
    out, truth, summary = converted
    df = pd.read_parquet(out / "dalle3.parquet")
    expected = [t for t in truth if t.caption is not None]
    assert len(df) == len(expected) == summary.rows
    # rows in shard order then member order
    for row, t in zip(df.itertuples(), expected):
        ext = os.path.splitext(t.image_member)[1]
        assert row.filename == f"{t.shard}/{t.key}{ext}"
        assert row.caption == t.caption
        assert (row.width, row.height) == (t.width, t.height)
        assert row.key == t.key and row.shard == t.shard
        assert (None if pd.isna(row.source) else row.source) == t.source


def test_simpletuner_invariants_hold(converted):
    out, truth, _ = converted
    df = pd.read_parquet(out / "dalle3.parquet")
    data = out / "data"
    assert df["caption"].notna().all() and (df["caption"].str.strip() != "").all()
    assert not df["caption"].str.contains("\n").any()
    on_disk = images_on_disk(data)
    # every image on disk has exactly one row keyed by its relative path, and vice versa
    assert sorted(on_disk) == sorted(df["filename"])
    assert df["filename"].is_unique
    for row in df.itertuples():
        image = data / row.filename
        txt = image.with_suffix(".txt")
        assert txt.read_text(encoding="utf-8") == row.caption
        with Image.open(image) as im:
            assert im.size == (row.width, row.height)
    # the image bytes are the tar member's bytes, untouched
    assert all((data / f).stat().st_size > 0 for f in df["filename"])


def test_dataloader_entry_has_absolute_existing_paths(converted):
    out, _, _ = converted
    entries = orjson.loads((out / "multidatabackend.json").read_bytes())
    image = next(e for e in entries if e.get("dataset_type", "image") == "image")
    assert image["metadata_backend"] == "parquet" and image["caption_strategy"] == "textfile"
    assert os.path.isabs(image["instance_data_dir"]) and os.path.isdir(image["instance_data_dir"])
    assert os.path.isabs(image["parquet"]["path"]) and os.path.isfile(image["parquet"]["path"])
    assert image["parquet"]["identifier_includes_extension"] is True
    assert image["parquet"]["filename_column"] == "filename"
    assert any(e.get("dataset_type") == "text_embeds" for e in entries)


def test_samples_without_size_take_it_from_the_image_header(converted):
    out, truth, summary = converted
    missing = [t for t in truth if not t.json_has_size and t.caption is not None]
    assert missing, "the corpus must contain samples without width/height"
    df = pd.read_parquet(out / "dalle3.parquet").set_index("key")
    for t in missing:
        assert (df.loc[t.key, "width"], df.loc[t.key, "height"]) == (t.width, t.height)
    assert sum(r.notes.get("size_from_header", 0) for r in summary.results) == len(missing)


def test_samples_without_caption_are_rejected_and_leave_no_files(converted):
    out, truth, _ = converted
    rejected = [t for t in truth if t.caption is None]
    assert rejected
    lines = [orjson.loads(line) for line in (out / "rejects.jsonl").read_bytes().splitlines()]
    by_member = {(r["shard"], r["member"]): r for r in lines}
    for t in rejected:
        entry = by_member[(t.shard, t.image_member)]
        assert entry["reason"] == "no_caption" and "short_caption" in entry["detail"]
        assert not (out / "data" / t.shard / t.image_member).exists()
        assert not (out / "data" / t.shard / f"{t.key}.txt").exists()


def test_worker_count_does_not_change_the_parquet_bytes(corpus, converted, tmp_path):
    root, _ = corpus
    out_parallel, _, _ = converted
    convert([root], tmp_path / "one", workers=1)
    assert (tmp_path / "one" / "dalle3.parquet").read_bytes() == (out_parallel / "dalle3.parquet").read_bytes()


def test_parquet_is_zstd_with_bounded_row_groups(corpus, tmp_path):
    root, truth = corpus
    out = tmp_path / "o"
    convert([root], out, workers=1, row_group_rows=50, batch_rows=7)
    meta = pq.ParquetFile(out / "dalle3.parquet").metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert all(s == 50 for s in sizes[:-1]) and 0 < sizes[-1] <= 50
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert sum(sizes) == sum(1 for t in truth if t.caption is not None)


def test_parquet_only_mode_writes_no_files(corpus, tmp_path):
    root, truth = corpus
    out = tmp_path / "o"
    convert([root], out, images=False, captions=False, workers=1)
    assert not any(p.is_file() for p in (out / "data").rglob("*"))
    entries = orjson.loads((out / "multidatabackend.json").read_bytes())
    assert entries[0]["caption_strategy"] == "parquet"
    assert len(pd.read_parquet(out / "dalle3.parquet")) == sum(1 for t in truth if t.caption is not None)


def test_captions_only_without_images(corpus, tmp_path):
    root, truth = corpus
    out = tmp_path / "o"
    convert([root], out, images=False, workers=1)
    files = [p for p in (out / "data").rglob("*") if p.is_file()]
    assert files and all(p.suffix == ".txt" for p in files)


def test_extra_fields_and_caption_field_choice(corpus, tmp_path):
    root, truth = corpus
    out = tmp_path / "o"
    convert(
        [root],
        out,
        workers=1,
        caption_field="long_caption",
        caption_fallbacks=(),
        fields=("md5_file_hash", "short_caption2", "url"),
    )
    df = pd.read_parquet(out / "dalle3.parquet")
    assert {"md5_file_hash", "short_caption2", "url"} <= set(df.columns)
    first = df.iloc[0]
    shard = root / f"{first['shard']}.tar"
    import tarfile

    with tarfile.open(shard) as tf:
        obj = orjson.loads(tf.extractfile(f"{first['key']}.json").read())
    assert first["caption"] == " ".join(obj["long_caption"].split())
    assert first["md5_file_hash"] == obj["md5_file_hash"]
    assert first["url"] == obj["url"]


def test_flat_layout_puts_images_in_data_and_refuses_clashes(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    # the same sample names in two shards (different shard ids)
    write_corpus(a, SynthSpec(shards=1, per_shard=12, seed=1, image_bytes=500))
    write_corpus(b, SynthSpec(shards=1, per_shard=12, seed=2, image_bytes=500))
    (b / "data-000000.tar").rename(b / "other-000000.tar")
    out = tmp_path / "o"
    summary = convert([a / "data-000000.tar", b / "other-000000.tar"], out, flat=True, workers=2)
    df = pd.read_parquet(out / "dalle3.parquet")
    assert df["filename"].is_unique
    assert all("/" not in f for f in df["filename"])
    assert sorted(images_on_disk(out / "data")) == sorted(df["filename"])
    # the first shard (in shard order) keeps the names, the second's clashing samples are rejected
    assert (df["shard"] == "data-000000").sum() == len(pq.read_table(out / ".dalle3-etl/parts/data-000000.parquet"))
    rejects = [orjson.loads(line) for line in (out / "rejects.jsonl").read_bytes().splitlines()]
    clashes = [r for r in rejects if r["reason"] == "name_clash"]
    assert clashes and all(r["shard"] == "other-000000" for r in clashes)
    for r in clashes:
        assert r["member"] not in set(df[df["shard"] == "other-000000"]["filename"])
    for row in df.itertuples():
        assert (out / "data" / row.filename).with_suffix(".txt").read_text() == row.caption
    assert summary.exit_code == 0


def test_nothing_is_written_outside_the_output_directory(corpus, tmp_path):
    root, _ = corpus
    before = set(tmp_path.iterdir())
    convert([root], tmp_path / "o", workers=1)
    assert set(tmp_path.iterdir()) - before == {tmp_path / "o"}
