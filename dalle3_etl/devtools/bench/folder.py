"""The extracted-folder modes of the bench (issue 17): `folder-convert` (parquet, captions and the images
hard-linked, from a folder already extracted) against `folder-old-recipe` (the old recipe's two scripts on the
same files: the recipe minus `tar xf`).

The folder is made once per bench run, untimed: `tar xf` of every corpus shard into ``work/extracted``. The old
recipe writes its caption files into the folder it reads, so it gets its own folder of hard links to the same
files (``work/extracted-old``): the converter's input never holds them. Its caption files are removed between
repetitions, so every repetition creates them, as the first run of the recipe does.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from dalle3_etl.store.fsio import Root

FOLDER_MODES = ("folder-convert", "folder-old-recipe")


class FolderModes:
    """Bodies, checks and cleaning of the folder modes (`modes.Modes` hands them over)."""

    def __init__(self, modes) -> None:
        self.modes = modes
        self.folder = modes.work / "extracted"
        self.old_folder = modes.work / "extracted-old"

    def prepare(self) -> None:
        """The extracted folder and the old recipe's folder of links to it (once; untimed)."""
        if self.folder.is_dir():
            return
        import subprocess

        self.folder.mkdir(parents=True)
        for shard in self.modes.shards:
            subprocess.run(["tar", "xf", shard, "-C", str(self.folder)], check=True)
        self.old_folder.mkdir()
        work = Root(self.modes.work)
        with os.scandir(self.folder) as entries:
            for entry in entries:
                work.link_new(entry.path, self.old_folder / entry.name)

    def body(self, mode: str) -> Callable:
        self.prepare()
        out = self.modes.target(mode)
        python = self.modes.python
        if mode == "folder-convert":
            cmd = [python, "-m", "dalle3_etl", "convert", str(self.folder), "-o", str(out), "-q"]
            cmd += ["-w", str(self.modes.cfg.workers)]
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
            data = out / "data"
            return {
                "rows": rows(out / "dalle3.parquet"),
                "captions": count(data, (".txt",)),
                "images": count(data, (".jpg", ".jpeg", ".png", ".webp")),
            }
        return {"rows": rows(out / "dalle3.parquet"), "captions": count(self.old_folder, (".txt",))}

    def clean(self, mode: str) -> None:
        if mode == "folder-old-recipe" and self.old_folder.is_dir():
            with os.scandir(self.old_folder) as entries:
                written = [e.name for e in entries if e.name.endswith(".txt")]
            Root(self.modes.work).remove_files(self.old_folder, written, prune=False)


def folder_target_pairs() -> list[tuple[str, str, str]]:
    """(name, slow mode, fast mode) of the folder target: at least 5x (issue 17)."""
    return [("extracted folder speed-up over the old recipe's scripts", "folder-old-recipe", "folder-convert")]


__all__ = ["FOLDER_MODES", "FolderModes", "folder_target_pairs"]
