"""The extracted-folder modes of the bench (issue 17), on a folder already extracted: `folder-convert` (parquet
and captions, `--link none --captions-in-place`: the images stay where they are and each caption file goes
beside its image, what the old recipe does) against `folder-old-recipe` (the old recipe's two scripts on the
same files: the recipe minus `tar xf`); `folder-convert-hard` is the default mode (images hard-linked into
OUT/data, captions there), a second figure.

The folder is made once per bench run, untimed: `tar xf` of every corpus shard into ``work/extracted``. The two
modes that write caption files into the folder they read each get their own folder of hard links to the same
files (``work/extracted-old``, ``work/extracted-new``), so `folder-convert-hard`'s input never holds them. Their
caption files are removed between repetitions, so every repetition creates them, as a first run does.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from dalle3_etl.store.fsio import Root

FOLDER_MODES = ("folder-convert", "folder-convert-hard", "folder-old-recipe")


class FolderModes:
    """Bodies, checks and cleaning of the folder modes (`modes.Modes` hands them over)."""

    def __init__(self, modes) -> None:
        self.modes = modes
        self.folder = modes.work / "extracted"
        self.old_folder = modes.work / "extracted-old"
        self.new_folder = modes.work / "extracted-new"  # folder-convert's, which gets caption files too

    def prepare(self) -> None:
        """The extracted folder and the old recipe's folder of links to it (once; untimed)."""
        if self.folder.is_dir():
            return
        import subprocess

        self.folder.mkdir(parents=True)
        for shard in self.modes.shards:
            subprocess.run(["tar", "xf", shard, "-C", str(self.folder)], check=True)
        self.old_folder.mkdir()
        self.new_folder.mkdir()
        work = Root(self.modes.work)
        with os.scandir(self.folder) as entries:
            for entry in entries:
                work.link_new(entry.path, self.old_folder / entry.name)
                work.link_new(entry.path, self.new_folder / entry.name)

    def body(self, mode: str) -> Callable:
        self.prepare()
        out = self.modes.target(mode)
        python = self.modes.python
        if mode in ("folder-convert", "folder-convert-hard"):
            folder = self.new_folder if mode == "folder-convert" else self.folder
            cmd = [python, "-m", "dalle3_etl", "convert", str(folder), "-o", str(out), "-q"]
            cmd += ["-w", str(self.modes.cfg.workers)]
            if mode == "folder-convert":
                cmd += ["--link", "none", "--captions-in-place"]
            return lambda r: r.run(cmd)
        make_parquet = self.modes._script("old_recipe", "make_parquet.py")
        make_captions = self.modes._script("old_recipe", "make_captions.py")

        def old_recipe(r) -> None:
            out.mkdir(parents=True)
            r.run([python, make_parquet, str(self.old_folder), str(out / "dalle3.parquet")])
            r.run([python, make_captions, str(self.old_folder)])

        return old_recipe

    def check(self, mode: str, count: Callable, rows: Callable) -> dict[str, int]:
        out = self.modes.target(mode)
        if mode == "folder-convert":
            return {"rows": rows(out / "dalle3.parquet"), "captions": count(self.new_folder, (".txt",))}
        if mode == "folder-convert-hard":
            data = out / "data"
            return {
                "rows": rows(out / "dalle3.parquet"),
                "captions": count(data, (".txt",)),
                "images": count(data, (".jpg", ".jpeg", ".png", ".webp")),
            }
        return {"rows": rows(out / "dalle3.parquet"), "captions": count(self.old_folder, (".txt",))}

    def clean(self, mode: str) -> None:
        folder = {"folder-old-recipe": self.old_folder, "folder-convert": self.new_folder}.get(mode)
        if folder is not None and folder.is_dir():  # the bench's own folder of links: its caption files go
            with os.scandir(folder) as entries:
                written = [e.name for e in entries if e.name.endswith(".txt")]
            Root(self.modes.work).remove_files(folder, written, prune=False)


def folder_target_pairs() -> list[tuple[str, str, str]]:
    """(name, slow mode, fast mode) of the folder target: at least 5x (issue 17)."""
    return [("extracted folder speed-up over the old recipe's scripts", "folder-old-recipe", "folder-convert")]


__all__ = ["FOLDER_MODES", "FolderModes", "folder_target_pairs"]
