"""Every path under OUT: the output's files, its data folder and the run state under OUT/.dalle3-etl.

Anything a shard without a record left behind is removed before it is redone, through `fsio` and only
what the tool wrote: a shard's folder `OUT/data/<id>` is the tool's only once `owned/<id>` (or its
record) says so, and even then only the files its part lists are removed. The records, the manifest,
the locks and the crash-test hook live beside this module (`records`, `manifest`, `locks`, `crash`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from dalle3_etl.errors import UsageError
from dalle3_etl.store.fsio import Root

STATE_DIRNAME = ".dalle3-etl"


class StateError(UsageError, RuntimeError):
    """The output directory cannot be used as asked (locked, other settings, not ours)."""


TMP_GLOB = ".*.tmp*"  # every temporary name a run writes next to a final file
DATA_DIRNAME = "data"


@dataclass(frozen=True)
class Layout:
    """Every path a run writes, all inside `out`."""

    out: Path

    @cached_property
    def fs(self) -> Root:
        """Every delete, move and overwrite under OUT (OUT/data may be a symlink the user made)."""
        return Root(self.out, link_ok=(DATA_DIRNAME,))

    @property
    def data(self) -> Path:
        return self.out / DATA_DIRNAME

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

    def record(self, shard_id: str) -> Path:
        return self.state / "shards" / f"{shard_id}.json"

    def part(self, shard_id: str) -> Path:
        return self.state / "parts" / f"{shard_id}.parquet"

    def rejects(self, shard_id: str) -> Path:
        return self.state / "rejects" / f"{shard_id}.jsonl"

    def staging(self, shard_id: str) -> Path:
        return self.state / "staging" / shard_id

    def flat_files(self, shard_id: str) -> Path:
        """Committed files of a --flat shard, waiting for the ordered publish at merge time."""
        return self.state / "flat" / shard_id

    def shard_data(self, shard_id: str) -> Path:
        return self.data / shard_id

    def claim(self, shard_id: str) -> Path:
        """Exists once the tool has created `OUT/data/<shard>` (written just before the folder is moved in)."""
        return self.state / "owned" / shard_id

    def owns_shard_data(self, shard_id: str) -> bool:
        """Whether `OUT/data/<shard>` is the tool's (a user folder that merely has a shard's name is not)."""
        return self.claim(shard_id).exists() or self.record(shard_id).exists()

    def ensure(self) -> None:
        for sub in ("shards", "parts", "rejects", "staging", "flat", "owned", "failed", "seen"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
