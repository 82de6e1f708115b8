"""Every path under OUT: the output's files, its data folder and the run state under OUT/.dalle3-etl.

This is the only place that names OUT's folders and the tool's own files; everything else asks `Layout`.
Anything a shard without a record left behind is removed before it is redone, through `fsio` and only
what the tool wrote: a shard's folder `OUT/data/<id>` is the tool's only once `owned/<id>` (or its
record) says so, and even then only the files its part lists are removed. The records, the manifest,
the locks and the crash-test hook live beside this module (`records`, `manifest`, `locks`, `crash`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from dalle3_etl.errors import UsageError
from dalle3_etl.store.fsio import Root

STATE_DIRNAME = ".dalle3-etl"
DATA_DIRNAME = "data"
REJECTS_NAME = "rejects.jsonl"  # every shard's rejects, merged
CONFIG_NAME = "multidatabackend.json"  # SimpleTuner's dataloader entry
IMAGEFOLDER_NAME = "metadata.jsonl"  # in OUT/data, with --also imagefolder (Hugging Face imagefolder)
TMP_GLOB = ".*.tmp*"  # every temporary name a run writes next to a final file


class StateError(UsageError, RuntimeError):
    """The output directory cannot be used as asked (locked, other settings, not ours)."""


@dataclass(frozen=True)
class Layout:
    """Every path a run writes, all inside `out`.

    OUT/<parquet>, rejects.jsonl, multidatabackend.json    the tool's files at the top (`own_files`)
    OUT/data/                     images and caption files (a symlink the user made is fine);
                                  metadata.jsonl with --also imagefolder (`imagefolder` in the state: it is the tool's)
    OUT/webshart/<id>.json        --webshart: the shard's index (the tars stay where they are)
    OUT/.dalle3-etl/              the run state: manifest.json, lock, workers.lock and, per shard,
      shards/<id>.json            its completion record (`store.records`)
      parts/<id>.parquet          its rows, rejects/<id>.jsonl its rejects
      staging/<id>/               a shard being converted: part.parquet, rejects.jsonl, files/, pending/
      flat/<id>/                  --flat files waiting for the ordered publish (and its clash journal)
      owned/<id>                  the claim: OUT/data/<id> is the tool's
      failed/<id>.json            nothing committed last time, and why
      seen/<id>                   a run set out to convert it
      dups/<id>.jsonl             --dedup: samples left out as repeats of an earlier one of the same shard
      held/<id>/                  --dedup: files of its rows the merge found to be duplicates (`dedup.json`: counts)
      trash/                      left by a --restart of an earlier version
      tasks/<id>/                 a shard split into tasks (`run.tasks`): plan.json (its byte ranges, fixed by
                                  the run that split it), files/<id>/ (the images and caption files of all its
                                  tasks), staging-<i>/ (a task being converted), done-<i>/ (a finished task:
                                  part, rejects, files.jsonl naming its entries in files/, result.json),
                                  assembling (its tasks are being put together into the shard's staging folder)
    """

    out: Path

    @cached_property
    def fs(self) -> Root:
        """Every delete, move and overwrite under OUT (OUT/data may be a symlink the user made)."""
        return Root(self.out, link_ok=(DATA_DIRNAME,))

    # -- the tool's files at the top of OUT --------------------------------------------------------

    def parquet(self, name: str) -> Path:
        """The merged parquet SimpleTuner reads (its name is the `parquet_name` setting)."""
        return self.out / name

    @property
    def merged_rejects(self) -> Path:
        return self.out / REJECTS_NAME

    @property
    def dataloader_config(self) -> Path:
        return self.out / CONFIG_NAME

    def own_files(self, parquet_names: Iterable[str]) -> list[Path]:
        """The tool's own files at the top of OUT (a user's file beside them is not)."""
        return [self.out / name for name in sorted({*parquet_names, REJECTS_NAME, CONFIG_NAME})]

    def own_temporaries(self, parquet_names: Iterable[str]) -> list[Path]:
        """Temporaries of the tool's own files at the top of OUT (`.<name>.tmp...`), sorted."""
        prefixes = tuple(f".{path.name}.tmp" for path in self.own_files(parquet_names))
        try:
            names = os.listdir(self.out)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [self.out / name for name in sorted(names) if name.startswith(prefixes)]

    @staticmethod
    def tmp(path: Path) -> Path:
        """The temporary name a merged file is written under before it is renamed over `path`."""
        return path.with_name(f".{path.name}.tmp")

    @property
    def data(self) -> Path:
        return self.out / DATA_DIRNAME

    @property
    def imagefolder_metadata(self) -> Path:
        """`--also imagefolder`: the Hugging Face imagefolder metadata, one line per parquet row."""
        return self.data / IMAGEFOLDER_NAME

    @property
    def imagefolder_claim(self) -> Path:
        """Written before `imagefolder_metadata`: that file is the tool's (a re-run keeps it up to date)."""
        return self.state / "imagefolder"

    def shard_data(self, shard_id: str) -> Path:
        return self.data / shard_id

    @property
    def webshart_dir(self) -> Path:
        """--webshart: one index per shard, `<shard>.json`, the metadata folder of SimpleTuner's webshart backend."""
        return self.out / "webshart"

    def webshart_index(self, shard_id: str) -> Path:
        return self.webshart_dir / f"{shard_id}.json"

    @property
    def webshart_tars(self) -> Path:
        """--webshart: the folder holding the indexed tars and each shard's tar name (`run.webshart`)."""
        return self.state / "webshart.json"

    @property
    def simpletuner_generation(self) -> Path:
        """A count of the runs that changed images SimpleTuner may have cached (`store.generation`)."""
        return self.state / "simpletuner-generation"

    @property
    def simpletuner_generation_pending(self) -> Path:
        """The generation a run counted and has not finished yet (`store.generation.bump_generation`)."""
        return self.state / "simpletuner-generation-pending"

    @property
    def webshart_generation(self) -> Path:
        """--webshart: the digest of the present indexes, which names SimpleTuner's cache folders (`run.webshart`)."""
        return self.state / "webshart-generation"

    def cache(self, kind: str, dataset_id: str) -> Path:
        """Where SimpleTuner caches one kind of embeddings ("vae", "text") of a dataset (named in its entry)."""
        return self.out / "cache" / kind / dataset_id

    # -- the run state -----------------------------------------------------------------------------

    @property
    def state(self) -> Path:
        return self.out / STATE_DIRNAME

    @property
    def manifest(self) -> Path:
        return self.state / "manifest.json"

    @property
    def lock(self) -> Path:
        return self.state / "lock"

    @property
    def workers_lock(self) -> Path:
        """Held (shared) by every worker process of a run; see `RunLock`."""
        return self.state / "workers.lock"

    @property
    def trash(self) -> Path:
        """Where `--restart` moves old output before deleting it (emptied by every run)."""
        return self.state / "trash"

    @property
    def records_dir(self) -> Path:
        return self.state / "shards"

    @property
    def parts_dir(self) -> Path:
        return self.state / "parts"

    @property
    def rejects_dir(self) -> Path:
        return self.state / "rejects"

    @property
    def staging_dir(self) -> Path:
        return self.state / "staging"

    @property
    def flat_dir(self) -> Path:
        return self.state / "flat"

    @property
    def owned_dir(self) -> Path:
        return self.state / "owned"

    @property
    def failed_dir(self) -> Path:
        return self.state / "failed"

    @property
    def seen_dir(self) -> Path:
        return self.state / "seen"

    @property
    def dups_dir(self) -> Path:
        return self.state / "dups"

    @property
    def held_dir(self) -> Path:
        return self.state / "held"

    @property
    def dedup_counts(self) -> Path:
        """--dedup: what the last merge decided per shard (duplicates dropped), for verify, status and stats."""
        return self.state / "dedup.json"

    @property
    def temporary_folders(self) -> tuple[Path, ...]:
        """The state folders the tool writes files into atomically, so where its temporaries may be left."""
        return (
            self.state,
            self.records_dir,
            self.parts_dir,
            self.rejects_dir,
            self.failed_dir,
            self.owned_dir,
            self.webshart_dir,
        )

    @property
    def tasks_dir(self) -> Path:
        return self.state / "tasks"

    def shard_tasks(self, shard_id: str) -> Path:
        """A split shard's task state (see the class doc); removed once the shard's record is written."""
        return self.tasks_dir / shard_id

    def task_plan(self, shard_id: str) -> Path:
        return self.shard_tasks(shard_id) / "plan.json"

    def task_staging(self, shard_id: str, index: int) -> Path:
        return self.shard_tasks(shard_id) / f"staging-{index}"

    def task_spool(self, shard_id: str, index: int) -> Path:
        """The bytes of an `hf://` task's range, downloaded (sparse, at their offsets in the shard) before use."""
        return self.task_staging(shard_id, index) / "range.tar"

    def task_done(self, shard_id: str, index: int) -> Path:
        return self.shard_tasks(shard_id) / f"done-{index}"

    def task_files(self, shard_id: str) -> Path:
        """The images and caption files of all of a split shard's tasks, as `staged_files` lays them out."""
        return self.shard_tasks(shard_id) / "files"

    def task_assembling(self, shard_id: str) -> Path:
        return self.shard_tasks(shard_id) / "assembling"

    # -- one shard's state ---------------------------------------------------------------------------

    def record(self, shard_id: str) -> Path:
        return self.records_dir / f"{shard_id}.json"

    def part(self, shard_id: str) -> Path:
        return self.parts_dir / f"{shard_id}.parquet"

    def rejects(self, shard_id: str) -> Path:
        return self.rejects_dir / f"{shard_id}.jsonl"

    def failed(self, shard_id: str) -> Path:
        """Marks a shard that failed last time (nothing committed); holds the failed result."""
        return self.failed_dir / f"{shard_id}.json"

    def seen(self, shard_id: str) -> Path:
        """Marks a shard a run set out to convert (status calls it pending until it completes or fails)."""
        return self.seen_dir / shard_id

    def staging(self, shard_id: str) -> Path:
        return self.staging_dir / shard_id

    def dups(self, shard_id: str) -> Path:
        """--dedup: one line per sample the shard left out because an earlier one of the shard had its key."""
        return self.dups_dir / f"{shard_id}.jsonl"

    def staged_dups(self, shard_id: str) -> Path:
        return self.staging(shard_id) / "dups.jsonl"

    def held(self, shard_id: str) -> Path:
        """--dedup: the images and caption files of the shard's rows that are duplicates of an earlier shard's,
        laid out as under OUT/data/<shard> (moved back if a later merge finds them first occurrences again)."""
        return self.held_dir / shard_id

    @property
    def input_folder_file(self) -> Path:
        """--link none: the input folder's absolute path, where the images stay (store.inplace)."""
        return self.state / "input-folder"

    def in_place(self, shard_id: str) -> Path:
        """--captions-in-place: the caption files a unit wrote in the input folder, each listed before it is made."""
        return self.state / "in-place" / f"{shard_id}.jsonl"

    def staged_part(self, shard_id: str) -> Path:
        return self.staging(shard_id) / "part.parquet"

    def staged_rejects(self, shard_id: str) -> Path:
        return self.staging(shard_id) / "rejects.jsonl"

    def staged_files(self, shard_id: str) -> Path:
        """The shard's images and caption files, laid out as they go under OUT/data."""
        return self.staging(shard_id) / "files"

    def staged_pending(self, shard_id: str) -> Path:
        """Image bodies of a streamed shard waiting for their JSON."""
        return self.staging(shard_id) / "pending"

    def flat_files(self, shard_id: str) -> Path:
        """Committed files of a --flat shard, waiting for the ordered publish at merge time."""
        return self.flat_dir / shard_id

    def flat_clashes(self, shard_id: str) -> Path:
        """The clash decision of an unfinished --flat publish, kept until the record says `published`."""
        return self.flat_files(shard_id) / ".dalle3-etl-clashes.json"

    def claim(self, shard_id: str) -> Path:
        """Exists once the tool has created `OUT/data/<shard>` (written just before the folder is moved in)."""
        return self.owned_dir / shard_id

    def owns_shard_data(self, shard_id: str) -> bool:
        """Whether `OUT/data/<shard>` is the tool's (a user folder that merely has a shard's name is not)."""
        return self.claim(shard_id).exists() or self.record(shard_id).exists()

    # -- which shards the state folder knows ---------------------------------------------------------

    def record_ids(self) -> set[str]:
        return _ids(self.records_dir, ".json")

    def failed_ids(self) -> set[str]:
        return _ids(self.failed_dir, ".json")

    def seen_ids(self) -> set[str]:
        return _ids(self.seen_dir)

    def known_ids(self) -> set[str]:
        """Every shard id the state folder knows: records, parts, rejects, staged or flat files, claims."""
        return (
            self.record_ids()
            | _ids(self.parts_dir, ".parquet")
            | _ids(self.rejects_dir, ".jsonl")
            | _ids(self.flat_dir)
            | _ids(self.owned_dir)
            | _ids(self.staging_dir)
            | _ids(self.dups_dir, ".jsonl")
            | _ids(self.held_dir)
        )

    def ensure(self) -> None:
        for folder in (
            self.records_dir,
            self.parts_dir,
            self.rejects_dir,
            self.staging_dir,
            self.flat_dir,
            self.owned_dir,
            self.failed_dir,
            self.seen_dir,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)


def _ids(folder: Path, suffix: str = "") -> set[str]:
    """The shard ids `<id><suffix>` in a state folder (a name starting with "." is a temporary, never an id)."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return set()
    return {name[: len(name) - len(suffix)] for name in names if name.endswith(suffix) and not name.startswith(".")}
