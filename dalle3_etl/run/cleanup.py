"""Taking back what earlier runs left: an interrupted run's leftovers, or (`--restart`) the whole output.

Only the tool's own names are removed, through `store.fsio`: temporaries of its own files, the files of
shards it started (as their parts list them), its state folder. What a user put in OUT stays.
"""

from __future__ import annotations

from dataclasses import replace

from dalle3_etl.settings import Settings
from dalle3_etl.shard.commit import forget_shard
from dalle3_etl.sources.base import natural_key
from dalle3_etl.store.crash import crash_point
from dalle3_etl.store.generation import bump_generation
from dalle3_etl.store.inplace import forget_input_folder
from dalle3_etl.store.layout import TMP_GLOB, Layout
from dalle3_etl.store.manifest import pinned_parquet, pinned_settings
from dalle3_etl.store.records import all_records


def clean_leftovers(layout: Layout, settings: Settings) -> None:
    """Remove what an interrupted run left: staging, temporaries, output of shards without a record.

    Only the tool's own names: temporaries of its own files at the top of OUT and in its state folder,
    and the files of shards it started (a part, staged files, or a claimed OUT/data/<shard>)."""
    fs = layout.fs
    for folder in layout.temporary_folders:
        for tmp in folder.glob(TMP_GLOB):
            fs.unlink(tmp)
    for tmp in layout.own_temporaries({settings.parquet_name}):
        fs.unlink(tmp)
    records = all_records(layout)
    for sid, rec in records.items():  # a --flat shard published just before a crash: its staged folder
        if rec.published:
            fs.remove_tree(layout.flat_files(sid))
    for sid in sorted(layout.known_ids() - set(records), key=natural_key):
        forget_shard(layout, sid, settings)  # reads a part still staged by a commit cut short
    fs.remove_tree(layout.staging_dir)
    fs.remove_tree(layout.trash)  # left by a --restart of an earlier version


def restart(layout: Layout, settings: Settings) -> None:
    """Delete the previous output, and only the tool's: crash-safe and idempotent.

    Every record goes first (each shard becomes incomplete), then each shard's files as its part lists
    them (under the settings the output was made with), then the tool's files at the top of OUT and its
    state, the manifest last, so a run killed here is still refused until `--restart` has finished.
    What a user put in OUT or OUT/data (their images, notes, SimpleTuner's caches) stays."""
    fs = layout.fs
    old = pinned_settings(layout)
    made_with = settings
    if old:  # which files a row stands for, as that output wrote them
        made_with = replace(
            settings,
            flat=bool(old.get("flat", settings.flat)),
            images=bool(old.get("images", settings.images)),
            captions=bool(old.get("captions", settings.captions)),
        )
    ids = sorted(layout.known_ids(), key=natural_key)
    if ids:  # the next output's images may take these names: SimpleTuner's caches of them would lie
        bump_generation(layout)
    owned = {sid for sid in ids if layout.owns_shard_data(sid)}
    for sid in ids:
        if sid in owned and not layout.claim(sid).exists():  # an output written before claims existed
            fs.write_atomic(layout.claim(sid), b"")
        fs.unlink(layout.record(sid))
    for sid in ids:
        forget_shard(layout, sid, made_with)
        if old.get("webshart"):  # its index, only where this output wrote indexes
            fs.unlink(layout.webshart_index(sid))
        crash_point("restart", sid)
    for path in layout.own_files({pinned_parquet(layout, old).name} if old else set()):  # the parquet it wrote
        fs.unlink(path)
    if layout.imagefolder_claim.exists():  # metadata.jsonl is the tool's only when claimed
        fs.unlink(layout.imagefolder_metadata)
    fs.unlink(layout.imagefolder_claim)
    # `owned` stays: a shard folder still holding a user's file is still the tool's folder
    for folder in (
        layout.parts_dir,
        layout.rejects_dir,
        layout.staging_dir,
        layout.flat_dir,
        layout.failed_dir,
        layout.seen_dir,
        layout.records_dir,
        layout.trash,
        layout.dups_dir,
        layout.held_dir,
        layout.tasks_dir,
    ):
        fs.remove_tree(folder)
    fs.unlink(layout.dedup_counts)
    fs.unlink(layout.webshart_tars)
    fs.unlink(layout.webshart_generation)
    forget_input_folder(layout)  # --link none
    fs.unlink(layout.manifest)


__all__ = ["clean_leftovers", "restart"]
