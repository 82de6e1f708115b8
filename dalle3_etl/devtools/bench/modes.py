"""How to run each mode once (the command lines of convert, the old recipe, the webdataset script and GNU
tar), and how to check, untimed, that it did its work."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dalle3_etl.devtools.bench.config import ALL_MODES, CONVERT_MODES, BenchConfig, BenchError, _rmtree
from dalle3_etl.devtools.bench.corpus import Corpus
from dalle3_etl.devtools.bench.folder import FOLDER_MODES, FolderModes
from dalle3_etl.devtools.bench.procs import Runner


def _count(folder: Path, suffixes: tuple[str, ...]) -> int:
    n = 0
    for _root, _dirs, files in os.walk(folder):
        n += sum(1 for f in files if f.endswith(suffixes))
    return n


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


class Modes:
    """How to run each mode once, and how to check (untimed) that it did its work."""

    def __init__(self, cfg: BenchConfig, corpus: Corpus, work: Path):
        self.cfg = cfg
        self.corpus = corpus
        self.work = work
        self.shards = [str(p) for p in corpus.shards]
        self.python = sys.executable
        for tool in ("tar",):
            if shutil.which(tool) is None:
                raise BenchError(f"{tool} not found on PATH")
        self.folder = FolderModes(self)

    def _script(self, *parts: str) -> str:
        path = self.cfg.scripts_dir.joinpath(*parts)
        if not path.exists():
            raise BenchError(f"{path} not found: --scripts-dir must hold old_recipe/ and wds_baseline.py")
        return str(path)

    def target(self, mode: str) -> Path:
        return self.work / mode

    def body(self, mode: str) -> Callable[[Runner], dict[str, float] | None]:
        out = self.target(mode)
        cfg = self.cfg
        if mode in FOLDER_MODES:
            return self.folder.body(mode)
        if mode in CONVERT_MODES:
            workers = 1 if mode.endswith("-1w") else cfg.workers
            cmd = [
                self.python,
                "-m",
                "dalle3_etl",
                "convert",
                *self.shards,
                "-o",
                str(out),
                "-q",
                "-w",
                str(workers),
                *CONVERT_MODES[mode],
            ]
            return lambda r: r.run(cmd)
        if mode == "tar-json":
            cmds = [["tar", "-xOf", s, "--wildcards", "*.json"] for s in self.shards]

            def tar_json(r: Runner) -> None:
                with open(os.devnull, "wb") as null:
                    r.run_parallel(cmds, cfg.workers, stdout=null)

            return tar_json
        if mode == "tar-xf":
            cmds = [["tar", "xf", s, "-C", str(out)] for s in self.shards]

            def tar_xf(r: Runner) -> None:
                out.mkdir(parents=True)
                r.run_parallel(cmds, cfg.workers)

            return tar_xf
        if mode == "old-recipe":
            make_parquet = self._script("old_recipe", "make_parquet.py")
            make_captions = self._script("old_recipe", "make_captions.py")
            data = out / "data"

            def old_recipe(r: Runner) -> dict[str, float]:
                t0 = time.perf_counter()
                data.mkdir(parents=True)
                for s in self.shards:
                    r.run(["tar", "xf", s, "-C", str(data)])
                t1 = time.perf_counter()
                r.run([self.python, make_parquet, str(data), str(out / "dalle3.parquet")])
                t2 = time.perf_counter()
                r.run([self.python, make_captions, str(data)])
                t3 = time.perf_counter()
                return {"tar xf": t1 - t0, "make_parquet.py": t2 - t1, "make_captions.py": t3 - t2}

            return old_recipe
        if mode == "webdataset":
            script = self._script("wds_baseline.py")
            cmd = [self.python, script, str(out), *self.shards, "--workers", str(cfg.workers)]
            return lambda r: r.run(cmd)
        raise BenchError(f"unknown mode {mode!r} (choose from {', '.join(ALL_MODES)})")

    def check(self, mode: str) -> dict[str, int]:
        """What the run produced (rows, caption files, image files): proves every mode did its work."""
        out = self.target(mode)
        if mode in FOLDER_MODES:
            return self.folder.check(mode, _count, _parquet_rows)
        if mode in CONVERT_MODES:
            from dalle3_etl.store.layout import Layout
            from dalle3_etl.store.manifest import pinned_parquet

            layout = Layout(out)
            data = layout.data
            indexes = {"indexes": _count(layout.webshart_dir, (".json",))} if mode == "convert-webshart" else {}
            return indexes | {
                "rows": _parquet_rows(pinned_parquet(layout)),
                "captions": _count(data, (".txt",)) if data.exists() else 0,
                "images": _count(data, (".jpg", ".jpeg", ".png", ".webp")) if data.exists() else 0,
            }
        if mode == "tar-xf":
            return {"json": _count(out, (".json",)), "images": _count(out, (".jpg", ".jpeg", ".png", ".webp"))}
        if mode == "old-recipe":
            return {
                "rows": _parquet_rows(out / "dalle3.parquet"),
                "captions": _count(out / "data", (".txt",)),
                "json": _count(out / "data", (".json",)),
            }
        if mode == "webdataset":
            return {
                "rows": _parquet_rows(out / "dalle3.parquet"),
                "captions": _count(out / "data", (".txt",)),
                "images": _count(out / "data", (".jpg", ".jpeg", ".png", ".webp")),
            }
        return {}

    def clean(self, mode: str) -> None:
        _rmtree(self.target(mode), self.work)
        if mode in FOLDER_MODES:
            self.folder.clean(mode)
