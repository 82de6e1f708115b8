"""Where the time goes: cProfile of one shard conversion in this process, self time grouped by stage."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dalle3_etl.devtools.bench.config import CONVERT_MODES, _rmtree
from dalle3_etl.devtools.bench.machine import portable

STAGES = (
    "tar header walk",
    "JSON parse",
    "record building",
    "pairing + driver",
    "image header probe",
    "parquet write",
    "file creation",
    "other",
)


def _stage_of(filename: str, func: str) -> str:
    base = os.path.basename(filename)
    if filename == "~":  # C builtins
        if "orjson.loads" in func:
            return "JSON parse"
        if any(s in func for s in ("posix.pread", "posix.lseek", "posix.read", "posix.fstat")):
            return "tar header walk"
        if any(
            s in func
            for s in (
                "posix.open",
                "posix.write",
                "posix.close",
                "copy_file_range",
                "posix.mkdir",
                "posix.replace",
                "posix.rename",
                "posix.stat",
                "posix.unlink",
                "posix.rmdir",
                "posix.scandir",
                "posix.link",
                "posix.fsync",
            )
        ):
            return "file creation"
        if "pyarrow" in func or "write_batch" in func or "record_batch" in func:
            return "parquet write"
        if "str.split" in func or "str.join" in func or "isinstance" in func or "dict" in func:
            return "record building"
        return "other"
    if "pyarrow" in filename:
        return "parquet write"
    if "PIL" in filename or base == "imageheader.py":
        return "image header probe"
    if base in ("tarstream.py", "tarheader.py", "tarbytes.py", "tarcompress.py"):
        return "tar header walk"
    if base in ("rows.py", "records.py"):  # rows: JSON to row; records: completion records
        return "record building"
    if base == "sinks.py":
        return "file creation" if func in ("path", "write_text") else "parquet write"
    in_fsio = os.path.basename(os.path.dirname(filename)) == "fsio"  # store/fsio/: __init__.py, fds.py
    if base in ("os.py", "shutil.py", "crash.py") or in_fsio or "posixpath" in filename:
        return "file creation"
    if base in ("convert.py", "writer.py", "samples.py"):
        return "pairing + driver"
    return "other"


def profile_shard(shard: Path, work: Path, mode: str = "convert-full") -> dict:
    """cProfile one shard conversion in this process; self time grouped by stage."""
    import cProfile
    import pstats

    from dalle3_etl.settings import load_settings
    from dalle3_etl.shard.convert import convert_shard
    from dalle3_etl.sources.resolve import resolve_inputs
    from dalle3_etl.store.layout import Layout

    flags = CONVERT_MODES[mode]
    settings = load_settings(None, images="--no-images" not in flags, captions="--no-captions" not in flags)
    src = resolve_inputs([str(shard)])[0]

    def once(prof: cProfile.Profile | None = None) -> float:
        out = work / f"profile-{mode}"
        _rmtree(out, work)
        Layout(out).ensure()
        t0 = time.perf_counter()
        if prof is not None:
            prof.enable()
        convert_shard(src, out, settings)
        if prof is not None:
            prof.disable()
        return time.perf_counter() - t0

    wall = min(once() for _ in range(2))  # warm-up and unprofiled wall time
    prof = cProfile.Profile()
    once(prof)
    _rmtree(work / f"profile-{mode}", work)
    stats = pstats.Stats(prof)
    by_stage = {s: 0.0 for s in STAGES}
    top = []
    for (filename, _line, func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        stage = _stage_of(filename, func)
        by_stage[stage] += tottime
        top.append((tottime, f"{os.path.basename(filename)}:{func}", stage))
    total = sum(by_stage.values())
    top.sort(reverse=True)
    return {
        "mode": mode,
        "shard": portable(shard),
        "wall_s_unprofiled": wall,
        "profiled_s": total,
        "stages": {s: {"seconds": v, "pct": 100 * v / total if total else 0.0} for s, v in by_stage.items()},
        "top_functions": [{"self_s": t, "function": f, "stage": s} for t, f, s in top[:15]],
    }
