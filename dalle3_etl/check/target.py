"""What SimpleTuner will read from an output: the dataloader entry's dataset (`Target`, `read_target`).

`verify` checks the entry and the dataset it names; `head` and `stats` read that dataset (`open_output`).
Every value of the entry that cannot be used falls back to where convert writes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from dalle3_etl.errors import UsageError
from dalle3_etl.settings import SIZE_KEYS, size_unit_problem
from dalle3_etl.shard.samples import IMAGE_EXTENSIONS
from dalle3_etl.store.inplace import input_folder
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.manifest import pinned_parquet, pinned_settings

CAPTION_STRATEGIES = ("textfile", "parquet")


def is_output_dir(out: Path) -> bool:
    return Layout(Path(out)).state.is_dir()


def is_image_name(name: str) -> bool:
    stem, dot, ext = name.rpartition(".")
    return bool(dot) and bool(stem) and not stem.endswith("/") and ext.lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class Target:
    """What SimpleTuner will read: from the dataloader entry where usable, else where convert writes it."""

    data_dir: Path
    parquet: Path
    caption_strategy: str
    filename: str = "filename"
    caption: str = "caption"
    width: str = "width"
    height: str = "height"

    @property
    def columns(self) -> list[str]:
        return [self.filename, self.caption, self.width, self.height]


@dataclass(frozen=True)
class Place:
    """Where the entry is checked for: OUT itself, or the path OUT will have on the training machine (`mount`)."""

    layout: Layout
    mount: Path | None = None

    def fix(self) -> str:
        """The command that writes the entry for this place."""
        mount = f" --mount-path {self.mount}" if self.mount is not None else ""
        return f"`dalle3-etl entry {self.layout.out}{mount}`"

    def local(self, value: str, what: str, problems: list[str]) -> Path | None:
        """The path of this machine an entry's absolute path names (under the mount path: the same place in OUT)."""
        if self.mount is None:
            return Path(value)
        try:
            return self.layout.out / Path(os.path.normpath(value)).relative_to(self.mount)
        except ValueError:
            problems.append(f"{what} {value} is not under the mount path {self.mount}; write it with {self.fix()}")
            return None


def _abs_path(value: Any, what: str, place: Place, *, want_dir: bool, problems: list[str]) -> Path | None:
    if not isinstance(value, str) or not value:
        problems.append(f"{what} is missing")
        return None
    if not os.path.isabs(value):
        problems.append(
            f"{what} {value!r} is not absolute (SimpleTuner strips it from image paths by string replacement)"
        )
        return None
    path = place.local(value, what, problems)
    if path is not None and not (path.is_dir() if want_dir else path.exists()):
        problems.append(
            f"{what} {value} does not exist (a copied or moved output? {place.fix()} writes the entry for it)"
            if not path.exists()
            else f"{what} {value} is not a {'directory' if want_dir else 'file'}"
        )
        return path if path.exists() else None
    return path


def _elsewhere(path: Path, expected: Path) -> bool:
    """Whether `path` is another folder than `expected` (the same folder reached through a link is not)."""
    try:
        return not os.path.samefile(path, expected)
    except OSError:
        return True


def read_target(out: Path, mount_path: Path | None = None) -> tuple[Target, list[str]]:
    """The dataset as the dataloader entry describes it, and what is wrong with that entry (checked as written
    for `mount_path`, the path OUT will have on the training machine, when given).

    Every value that cannot be used falls back to what convert writes, so the other checks still run.
    """
    layout = Layout(Path(out))
    place = Place(layout, Path(os.path.normpath(mount_path)) if mount_path is not None else None)
    settings = pinned_settings(layout)
    in_place = settings.get("link") == "none"  # the images stay in the input folder (store.inplace)
    target = Target(
        data_dir=input_folder(layout) or layout.data,
        parquet=pinned_parquet(layout, settings),
        caption_strategy="textfile"
        if settings.get("captions", True) and (not in_place or settings.get("captions_in_place"))
        else "parquet",
    )
    problems: list[str] = []
    path = layout.dataloader_config
    try:
        entries = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return target, [f"{path} is missing (convert writes it when a run completes)"]
    except orjson.JSONDecodeError as exc:
        return target, [f"{path} is not valid JSON: {exc}"]
    if not isinstance(entries, list):
        return target, [f"{path} must hold a JSON list of datasets, not a {type(entries).__name__}"]
    images = [e for e in entries if isinstance(e, dict) and e.get("dataset_type", "image") == "image"]
    if not images:
        return target, [f"{path} has no image dataset entry"]
    if not any(isinstance(e, dict) and e.get("dataset_type") == "text_embeds" for e in entries):
        problems.append('no text_embeds entry (SimpleTuner needs one, with "default": true)')
    entry = images[0]
    target = _read_image_entry(entry, place, target, problems)
    spec = entry.get("parquet")
    if not isinstance(spec, dict):
        problems.append('the image entry has no "parquet" object')
        return target, problems
    return _read_parquet_spec(spec, place, target, problems), problems


def _read_image_entry(entry: dict, place: Place, target: Target, problems: list[str]) -> Target:
    """The image folder and caption strategy of the image entry (problems appended to `problems`)."""
    layout = place.layout
    value = entry.get("instance_data_dir")
    expected = input_folder(layout) or layout.data
    where = place if expected == layout.data else Place(layout)  # --link none: the input folder, not moved
    data_dir = _abs_path(value, "instance_data_dir", where, want_dir=True, problems=problems)
    if data_dir is not None and data_dir.is_dir():
        if _elsewhere(data_dir, expected):
            problems.append(
                f"instance_data_dir {value} is not this output's {expected} (a copied or moved "
                f"output?); SimpleTuner would read the other one. Write the entry again for this "
                f"place: run {place.fix()}"
            )
        else:
            target = replace(target, data_dir=data_dir)
    strategy = entry.get("caption_strategy")
    if strategy in CAPTION_STRATEGIES:
        target = replace(target, caption_strategy=strategy)
    else:
        problems.append(f"caption_strategy {strategy!r} is not one of {', '.join(CAPTION_STRATEGIES)}")
    if entry.get("metadata_backend") != "parquet":
        problems.append(f"metadata_backend is {entry.get('metadata_backend')!r}, not 'parquet'")
    unit = size_unit_problem(str(entry.get("resolution_type")), {k: entry[k] for k in SIZE_KEYS if k in entry})
    if unit:
        problems.append(f"{unit} (SimpleTuner refuses the entry); write it again: `dalle3-etl entry OUT` with them")
    return target


def _read_parquet_spec(spec: dict, place: Place, target: Target, problems: list[str]) -> Target:
    """The parquet file and its column names, from the image entry's "parquet" object."""
    layout = place.layout
    parquet = _abs_path(spec.get("path"), "parquet.path", place, want_dir=False, problems=problems)
    if parquet is not None and parquet.exists():
        if _elsewhere(parquet.parent, layout.out):
            problems.append(
                f"parquet.path {spec.get('path')} is not in this output {layout.out} (a copied or moved output?); "
                f"run {place.fix()}"
            )
        else:
            target = replace(target, parquet=parquet)
    for role in ("filename", "caption", "width", "height"):
        name = spec.get(f"{role}_column")
        if isinstance(name, str) and name:
            target = replace(target, **{role: name})
        else:
            problems.append(f"parquet.{role}_column is missing")
    if spec.get("identifier_includes_extension") is not True:
        problems.append("parquet.identifier_includes_extension must be true: the filename column keeps the extension")
    return target


def open_output(out: Path) -> tuple[Target, pq.ParquetFile]:
    """The target of an output and its parquet opened, for `head` and `stats`; a UsageError when unreadable."""
    if not is_output_dir(out):
        raise UsageError(f"{out} is not a dalle3-etl output directory")
    target, _ = read_target(out)
    try:
        return target, pq.ParquetFile(target.parquet)
    except (OSError, pa.ArrowException) as exc:
        raise UsageError(
            f"cannot read {target.parquet}: {exc} (has convert finished? `dalle3-etl verify {out}` tells more)"
        ) from None


__all__ = ["CAPTION_STRATEGIES", "Target", "is_image_name", "is_output_dir", "open_output", "read_target"]
