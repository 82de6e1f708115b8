"""Whether a run may start at all, checked before any work: OUT usable, settings the same as OUT's.

Settings that change the output are pinned in OUT's manifest; a run with other settings is refused
rather than mixing two settings in one dataset (`--restart` starts over).
"""

from __future__ import annotations

import os
from pathlib import Path

from dalle3_etl.settings import Settings
from dalle3_etl.store.layout import Layout, StateError
from dalle3_etl.store.manifest import pinned_parquet, read_manifest, settings_differences

#: How the user sets each output-changing setting (for the refusal message).
SETTING_FLAGS = {
    "caption_field": "--caption-field",
    "caption_fallbacks": "--caption-fallbacks",
    "fields": "--fields",
    "images": "--images/--no-images",
    "captions": "--captions/--no-captions",
    "flat": "--flat/--subfolders",
    "max_json_bytes": "--max-json-bytes",
    "min_side": "--min-side",
    "max_aspect": "--max-aspect",
    "sources": "--sources",
    "exclude_sources": "--exclude-sources",
    "min_caption_chars": "--min-caption-chars",
    "extra_captions": "--extra-captions",
    "dedup": "--dedup",
    "also": "--also",
    "webshart": "--webshart",
}


def check_out_dir(out: Path, *, write: bool = True) -> None:
    """Refuse an OUT that cannot become a dalle3-etl output, before any input is read or anything written:
    a file, a folder holding other things, a path under a file, a folder this process cannot write in
    (not checked without `write`: a dry run writes nothing).
    (What only creating it can tell, e.g. OUT in /proc, is refused by `run_convert` when it creates OUT.)"""
    out = Path(out).absolute()
    try:
        str(out).encode("utf-8")
    except UnicodeEncodeError:
        raise StateError(
            f"output {out} is not a valid UTF-8 path: the parquet writer and SimpleTuner's JSON "
            "entry cannot name it; choose another folder name"
        ) from None
    try:
        if out.exists() and not out.is_dir():
            raise StateError(f"output {out} exists and is not a directory")
        if out.is_dir() and any(out.iterdir()) and not Layout(out).state.is_dir():
            raise StateError(
                f"output {out} is not empty and is not a dalle3-etl output; choose an empty or new directory"
            )
        there = out  # OUT, or the nearest folder above it that exists: where OUT is created
        while not there.exists() and there != there.parent:
            there = there.parent
        if not there.is_dir():
            raise StateError(f"output {out} cannot be created: {there} is a file, not a directory")
        if write and not os.access(there, os.W_OK | os.X_OK):
            raise StateError(
                f"output {out} cannot be written: no write permission in {there} (or read-only filesystem)"
            )
    except OSError as exc:
        raise StateError(f"output {out} cannot be used: {exc.strerror or exc}") from None


def check_settings(layout: Layout, settings: Settings) -> None:
    manifest = read_manifest(layout)
    if manifest is None:
        return
    # a setting absent from OUT's manifest (added later, or pinned only when set) was its default there
    defaults = Settings().output_fingerprint(every=True)
    pinned = {**defaults, **manifest.get("settings", {})}
    diffs = settings_differences(pinned, {**defaults, **settings.output_fingerprint()})
    if diffs:
        named = [
            f"{line}  ({SETTING_FLAGS[line.split(':')[0]]})" if line.split(":")[0] in SETTING_FLAGS else line
            for line in diffs
        ]
        raise StateError(
            f"{layout.out} was converted with other settings that change the output:\n  - "
            + "\n  - ".join(named)
            + "\nRun again with the original settings to resume, or add --restart to start over "
            "(this deletes the converted output in that directory)."
        )


def refuse_unsafe_out(layout: Layout, settings: Settings, *, restart_run: bool) -> None:
    """Before anything in OUT is removed or written (--restart included): refuse, naming it, a link or a file of
    the user's where this run would replace or remove one of the tool's files. The tool never writes or removes
    through a link, and the user's files are not its own, so going on would only stop half way."""
    manifest = read_manifest(layout)
    pinned = pinned_parquet(layout) if manifest is not None else None
    top = {layout.parquet(settings.parquet_name), layout.merged_rejects, layout.dataloader_config}
    if pinned is not None:
        top.add(pinned)
    if "imagefolder" in settings.also or os.path.lexists(layout.imagefolder_claim):
        top.add(layout.imagefolder_metadata)
    for path in sorted(top):
        if os.path.islink(path):
            raise StateError(
                f"{path} is a symlink: dalle3-etl rewrites that file and never through a link; remove the "
                "link (what it points at is not touched) and run again: nothing was converted or removed"
            )
    new_parquet = layout.parquet(settings.parquet_name)
    if os.path.lexists(new_parquet) and pinned != new_parquet:
        raise StateError(
            f"{new_parquet} exists and was not written by dalle3-etl (this output's parquet is "
            f"{pinned.name if pinned is not None else 'not written yet'}); move it away or choose another "
            "parquet_name: nothing was converted or removed"
        )
    if restart_run:
        linked = [layout.shard_data(sid) for sid in sorted(layout.known_ids()) if layout.shard_data(sid).is_symlink()]
        if linked:
            raise StateError(
                f"{linked[0]} is a symlink{f' (and {len(linked) - 1} more)' if len(linked) > 1 else ''}: "
                "--restart removes a shard's files from its folder and never through a link; put the folder "
                "back or remove the link: nothing was removed"
            )


__all__ = ["SETTING_FLAGS", "check_out_dir", "check_settings", "refuse_unsafe_out"]
