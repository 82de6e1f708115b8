"""Command-line inputs to shard sources: local and ``hf://`` arguments, each shard once, clashing ids refused."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from dalle3_etl.sources.base import ShardSource, SourceError, folder_identity, natural_key, shown
from dalle3_etl.sources.folder import UNIT_SAMPLES, expand_folder
from dalle3_etl.sources.local import expand_local, local_source


def _folded(shard_id: str) -> str:
    """The id as a case-insensitive, normalisation-insensitive file system (macOS, Windows) compares it."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", shard_id).casefold())


def resolve_inputs(
    args: list[str],
    *,
    keep_dir: Path | str | None = None,
    unit_samples: int = UNIT_SAMPLES,
    skip_txt: bool = False,
    out: Path | str | None = None,
) -> list[ShardSource]:
    """Turn command-line inputs into shard sources, in natural shard-id order, each shard once.

    ``keep_dir`` (``--keep-tars``): where the ``hf://`` sources keep a verified copy of the bytes they read.
    A folder of image files and no tars is an extracted folder: its units of ``unit_samples`` samples are
    sources too (`sources.folder`). ``out``: OUT, never listed when it lies below a folder argument (an OUT made
    inside the folder it is made from: its files are no inputs, and the next run sees the folder as the first).

    Raises SourceError naming the argument for anything that matches nothing, naming the file for a shard id
    that cannot name output (see `shard_id_problem`), and naming both files for two different files whose
    shard ids are the same, or differ only in letter case or Unicode normalisation (their outputs would collide,
    on macOS and Windows in the second case). The same file reached twice (two links to one blob) is one shard.
    """
    if not args:
        raise SourceError("no input given: pass shard files, directories or globs")
    by_id: dict[str, ShardSource] = {}
    found: list[ShardSource] = []
    hub_args = [arg for arg in args if arg.startswith("hf://")]
    if hub_args:
        from dalle3_etl.sources.hub.resolve import resolve_hub_inputs  # lazily: only Hub inputs need the client

        found.extend(resolve_hub_inputs(hub_args, keep_dir=keep_dir))  # one commit per repo@revision
    skip = folder_identity(out)
    for arg in args:
        if arg.startswith("hf://"):
            continue
        folder = Path(arg).expanduser()
        units = expand_folder(arg, folder, unit_samples, skip_txt, skip) if folder.is_dir() else None
        found.extend(units if units is not None else (local_source(p) for p in expand_local(arg, skip)))
    for src in found:
        seen = by_id.get(src.shard_id)
        if seen is not None and seen.uri != src.uri and seen.fingerprint != src.fingerprint:
            raise SourceError(
                f"two inputs share shard id {shown(src.shard_id)}: {shown(seen.uri)} and {shown(src.uri)}; "
                "rename one (outputs are keyed by shard file name)"
            )
        if seen is None or natural_key(src.uri) < natural_key(seen.uri):  # the same file: one name, whatever the order
            by_id[src.shard_id] = src
    sources = sorted(by_id.values(), key=lambda s: natural_key(s.shard_id))
    folded: dict[str, ShardSource] = {}
    for src in sources:
        seen = folded.setdefault(_folded(src.shard_id), src)
        if seen is not src:
            raise SourceError(
                f"shard ids {shown(seen.shard_id)} ({shown(seen.uri)}) and {shown(src.shard_id)} ({shown(src.uri)}) "
                "differ only in letter case or Unicode normalisation: their outputs would be the same folder on "
                "macOS and Windows; rename one"
            )
    return sources
