"""SimpleTuner's caches of an output, and when they go stale.

SimpleTuner keeps, per dataset, what it learnt of the images: the bucket and metadata caches
(`aspect_ratio_bucket_{indices,metadata}_<cache_file_suffix>.json` in instance_data_dir: each image's size, crop
and bucket) and the VAE latents (`cache_dir_vae/<shard>/<digest of the file stem>.pt`). It trusts both for every
image whose name it has seen: an image of the same name with other pixels or another size keeps the old size,
bucket and latents (checked with SimpleTuner 4.10.1's start-up code). Images that are only added or removed are
handled by SimpleTuner itself.

So the output counts its generations: a run that converts again a shard that was complete (its input changed, or
`--retry-failed` on a damaged one) and `--restart` of an output that held shards count one more, before any file
changes. The entry (`run.entry`) names its bucket caches and its default VAE folder after a digest of that count
and of the settings that decide sizes and buckets, so SimpleTuner starts new caches exactly when the old ones may
lie. The count is kept through `--restart`: the caches of before it stay in OUT (they are SimpleTuner's).
"""

from __future__ import annotations

from dalle3_etl.store.layout import Layout


def read_generation(layout: Layout) -> int:
    try:
        return int(layout.simpletuner_generation.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def bump_generation(layout: Layout) -> None:
    """Count one more generation, once for a run however often it is resumed: the target is kept in a pending
    marker first, and a resumed run that finds it only makes sure the count is there (`settle_generation` clears
    it once the run's entry is written). The same changes give the same count whether or not a run was killed."""
    pending = layout.simpletuner_generation_pending
    try:
        target = int(pending.read_text().strip())
    except (FileNotFoundError, ValueError):
        target = read_generation(layout) + 1
        layout.fs.write_atomic(pending, str(target).encode())
    if read_generation(layout) != target:
        layout.fs.write_atomic(layout.simpletuner_generation, str(target).encode())


def settle_generation(layout: Layout) -> None:
    """The run that counted a generation wrote its entry: a later change counts again."""
    layout.fs.unlink(layout.simpletuner_generation_pending)


__all__ = ["bump_generation", "read_generation", "settle_generation"]
