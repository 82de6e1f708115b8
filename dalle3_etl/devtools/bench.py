"""`dalle3-etl bench`: throughput of `convert` against the old recipe, a webdataset script and GNU tar.

One run generates (or reuses) a synthetic corpus (`synth`), then runs every mode several times,
alternating modes within each repetition (the order rotates every repetition), and reports per mode
the median wall time, the spread (min, max), samples/s, MB/s of tar input, CPU seconds and the peak
RSS of every process it started (pool workers included), then every ratio between modes measured in
this same run and whether the issue's targets are met. Results go to a JSON file and a PNG chart.

Modes (names used by ``--modes``):

* ``convert-parquet``, ``convert-captions``, ``convert-full``: ``dalle3-etl convert -w N`` with
  ``--no-images --no-captions``, ``--no-images``, and the defaults (images + captions + parquet);
* ``convert-parquet-1w``: parquet-only with one worker (for the 2-vs-1 worker scaling target);
* ``old-recipe``: ``tar xf`` every shard, one after the other, into one folder, then
  ``benchmarks/old_recipe/make_parquet.py`` and ``make_captions.py`` (single process, as users run it);
* ``webdataset``: ``benchmarks/wds_baseline.py`` with N worker processes (same outputs as the old recipe);
* ``tar-json``: ``tar -xOf SHARD --wildcards '*.json' > /dev/null``, one tar per core at a time
  (the read limit for metadata);
* ``tar-xf``: ``tar xf SHARD -C DIR``, one tar per core at a time (the limit for extraction).

Peak RSS: every command runs under ``/usr/bin/time -f %M`` (when present), whose figure is the kernel's
``ru_maxrss`` of that command, exact, and (Linux folds reaped children into it) the max over the
command and the children it reaped; a command started straight from this large Python process would
inherit this process's RSS in ``ru_maxrss``, hence the small wrapper. Every process further down (the
forkserver and pool workers of `convert`, the pool of the webdataset script) and the driver itself are
also sampled from ``/proc/<pid>/status`` (VmHWM, the kernel's own high-water mark) every 50 ms; pool
workers of `convert`, which may live only milliseconds on a small corpus, also log their own
``ru_maxrss`` after each shard (``DALLE3_ETL_RSS_LOG``), so none is missed.

Timings live here and in ``benchmarks/``, never in tests. Linux only (GNU tar, /proc).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from dalle3_etl.errors import EtlError
from dalle3_etl.store.fsio import Root
from dalle3_etl.safetext import plain

CONVERT_MODES = {
    "convert-parquet": ["--no-images", "--no-captions"],
    "convert-captions": ["--no-images"],
    "convert-full": [],
    "convert-parquet-1w": ["--no-images", "--no-captions"],
}
ALL_MODES = (
    "convert-parquet", "convert-captions", "convert-full", "convert-parquet-1w",
    "old-recipe", "webdataset", "tar-json", "tar-xf",
)
BASELINES = ("tar-json", "tar-xf", "old-recipe", "webdataset")
SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
POLL_SECONDS = 0.05
RSS_LIMIT_MB = 200.0
FLAT_TOLERANCE = 0.10


class BenchError(EtlError, RuntimeError):
    """The benchmark cannot run (missing tool or script) or a mode failed."""


# ----------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------


@dataclass
class BenchConfig:
    samples: int = 200_000
    shards: int = 12
    image_bytes: int = 4_000
    location: Path = Path("/dev/shm")
    reps: int = 3
    workers: int = 2
    modes: tuple[str, ...] = ALL_MODES
    out_dir: Path = Path("benchmarks/results")
    corpus: Path | None = None  # existing shards instead of a generated corpus
    keep_corpus: bool = False
    memory_check: bool = True
    memory_base: tuple[int, int] = (2, 2_000)  # (shards, samples per shard) of the 1x memory-check corpus
    profile: bool = False  # profile one shard conversion in-process (cProfile), per stage
    seed: int = 0
    scripts_dir: Path = SCRIPTS_DIR
    quiet: bool = False

    @property
    def per_shard(self) -> int:
        return -(-self.samples // self.shards)


# ----------------------------------------------------------------------------------------------------
# Process measurement
# ----------------------------------------------------------------------------------------------------


@dataclass
class ProcStat:
    pid: int
    name: str
    peak_rss_kb: int
    exact: bool  # from wait4 (exact) or sampled from /proc VmHWM


@dataclass
class RunStat:
    seconds: float
    cpu_seconds: float
    procs: list[ProcStat] = field(default_factory=list)
    steps: dict[str, float] = field(default_factory=dict)
    check: dict[str, int] = field(default_factory=dict)
    load_before: float = 0.0  # 1-minute load average when the run started (other work on the machine)

    @property
    def peak_rss_kb(self) -> int:
        return max((p.peak_rss_kb for p in self.procs), default=0)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_table() -> tuple[dict[int, list[int]], dict[int, float]]:
    """(children of each pid, own user+system CPU seconds of each pid) from /proc/*/stat."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # pid (comm) state ppid ... utime stime: comm may hold spaces and ')'; split after the last ')'
        fields = stat[stat.rfind(b")") + 2 :].split()
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        cpu[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return children, cpu


def _status(pid: int) -> tuple[int, str] | None:
    """(VmHWM in kB, command line) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            text = fh.read().decode("utf-8", "replace")
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read()
    except OSError:
        return None
    hwm = 0
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
            break
    return hwm, cmd.decode("utf-8", "replace")


def _short_name(cmd: Sequence[str]) -> str:
    if not cmd:
        return "?"
    text = " ".join(cmd)
    if "resource_tracker" in text:
        return "resource tracker"
    if "forkserver" in text:
        return "forkserver"
    prog = Path(cmd[0]).name
    if prog.startswith("python") and len(cmd) > 1:
        if cmd[1] == "-m" and len(cmd) > 2:
            return " ".join(cmd[2:4])
        return Path(cmd[1]).name
    return prog


class TreeSampler:
    """Samples VmHWM of every descendant of the given roots until stopped (a background thread)."""

    def __init__(self, interval: float = POLL_SECONDS):
        self.interval = interval
        self.roots: set[int] = set()
        self.seen: dict[int, list] = {}  # pid -> [VmHWM kB, cmdline, ppid, root pid, own CPU seconds]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def sample(self) -> None:
        roots = set(self.roots)
        if not roots:
            return
        children, cpu = _process_table()
        stack = [(c, r, r) for r in roots for c in children.get(r, [])]
        while stack:
            pid, ppid, root = stack.pop()
            stack.extend((c, pid, root) for c in children.get(pid, []))
            got = _status(pid)
            if got is None:
                continue
            hwm, cmdline = got
            if not cmdline or not hwm:
                continue  # a zombie (exited, not yet reaped): keep what was seen while it ran
            old = self.seen.get(pid)
            if old is None or old[1] != cmdline:  # new, or it called exec: a new program with a new VmHWM
                self.seen[pid] = [hwm, cmdline, ppid, root, cpu.get(pid, 0.0)]
            else:
                old[0] = max(old[0], hwm)
                old[4] = max(old[4], cpu.get(pid, 0.0))

    def tree_cpu(self) -> dict[int, float]:
        """Own CPU seconds summed over every sampled process under each root (as last sampled)."""
        out: dict[int, float] = {}
        for _hwm, _cmd, _ppid, root, cpu in self.seen.values():
            out[root] = out.get(root, 0.0) + cpu
        return out

    def descendants(self, skip_children_of: set[int] = frozenset()) -> list[ProcStat]:
        """Sampled processes. A child with its parent's command line was forked without exec (a pool
        worker). A direct child of a `skip_children_of` pid (a /usr/bin/time wrapper) is measured exactly
        by the wrapper, but that figure is the max over the process and the children it reaped; when it
        has children, its own sampled figure is kept too, as "<name> (sampled)"."""
        out = []
        parents = {v[2] for v in self.seen.values()}
        for pid, (hwm, cmdline, ppid, _root, _cpu) in sorted(self.seen.items()):
            name = _short_name([c for c in cmdline.split("\0") if c])
            if ppid in skip_children_of:
                if pid not in parents:
                    continue  # measured exactly by the wrapper
                name += " (sampled)"  # the wrapper's figure also covers its reaped children: keep this one too
            parent = self.seen.get(ppid)
            if parent is not None and parent[1] == cmdline:
                name = "pool worker" if name == "forkserver" else f"{name} worker"
            out.append(ProcStat(pid, name, hwm, False))
        return out


class Runner:
    """Starts commands, reaps them with wait4 (exact CPU time) and samples their descendants.

    Peak RSS of each command comes from `/usr/bin/time -f %M` when present: the kernel's maxrss of a
    child started straight from this (large) Python process includes this process's RSS at fork time,
    a small wrapper process avoids that. Without it, wait4's ru_maxrss is used (an upper bound)."""

    TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None

    def __init__(self) -> None:
        self.procs: list[ProcStat] = []
        self.cpu_by_root: dict[int, float] = {}  # wait4 user+system CPU of each command (+ children it reaped)
        self.wrappers: set[int] = set()
        self.sampler: TreeSampler | None = None

    def _start(self, cmd: Sequence[str], stdout=None) -> subprocess.Popen:
        err = tempfile.TemporaryFile()  # not a pipe: a chatty process must never block on a full pipe
        argv = [str(c) for c in cmd]
        rss_file = None
        if self.TIME:
            rss_file = tempfile.NamedTemporaryFile(prefix="dalle3-etl-bench-rss-", delete=False)
            rss_file.close()
            argv = [self.TIME, "-f", "%M", "-o", rss_file.name, *argv]
        proc = subprocess.Popen(argv, stdout=stdout if stdout is not None else subprocess.DEVNULL, stderr=err)
        proc.stderr = err
        proc.rss_file = rss_file.name if rss_file else None  # type: ignore[attr-defined]
        if rss_file:
            self.wrappers.add(proc.pid)
        if self.sampler is not None:
            self.sampler.roots.add(proc.pid)
        return proc

    def _reaped(self, proc: subprocess.Popen, cmd: Sequence[str], status: int, ru) -> None:
        if self.sampler is not None:
            self.sampler.roots.discard(proc.pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stderr.seek(0)
        err = proc.stderr.read().decode("utf-8", "replace")
        proc.stderr.close()
        maxrss = ru.ru_maxrss
        if proc.rss_file:
            try:
                lines = Path(proc.rss_file).read_text().split()
                maxrss = int(lines[-1]) if lines else maxrss
            finally:
                _remove(Path(proc.rss_file))
        if proc.returncode != 0:
            raise BenchError(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{err[-2000:]}")
        self.cpu_by_root[proc.pid] = ru.ru_utime + ru.ru_stime
        self.procs.append(ProcStat(proc.pid, _short_name([str(c) for c in cmd]), maxrss, True))

    def run(self, cmd: Sequence[str], stdout=None) -> None:
        proc = self._start(cmd, stdout)
        _, status, ru = os.wait4(proc.pid, 0)
        self._reaped(proc, cmd, status, ru)

    def run_parallel(self, cmds: Sequence[Sequence[str]], jobs: int, stdout=None) -> None:
        """Run commands with at most `jobs` at a time (like `xargs -P jobs`)."""
        queue = list(cmds)
        running: dict[int, tuple[subprocess.Popen, Sequence[str]]] = {}
        try:
            while queue or running:
                while queue and len(running) < jobs:
                    cmd = queue.pop(0)
                    proc = self._start(cmd, stdout)
                    running[proc.pid] = (proc, cmd)
                pid, status, ru = os.wait4(-1, 0)
                if pid in running:
                    proc, cmd = running.pop(pid)
                    self._reaped(proc, cmd, status, ru)
        finally:
            for proc, _ in running.values():
                proc.kill()
                proc.wait()


def _logged_workers(path: str) -> dict[int, int]:
    """Peak RSS (kB) that pool workers logged themselves after each shard (`executors.RSS_LOG_ENV`)."""
    out: dict[int, int] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        pid, kind, kb = line.split()
        if kind == "pool":
            out[int(pid)] = max(out.get(int(pid), 0), int(kb))
    return out


def measure(body: Callable[[Runner], dict[str, float] | None]) -> RunStat:
    from dalle3_etl.executors.base import RSS_LOG_ENV

    runner = Runner()
    load = os.getloadavg()[0]
    log = tempfile.NamedTemporaryFile(prefix="dalle3-etl-bench-workers-", delete=False)
    log.close()
    os.environ[RSS_LOG_ENV] = log.name
    try:
        with TreeSampler() as sampler:
            runner.sampler = sampler
            start = time.perf_counter()
            steps = body(runner) or {}
            seconds = time.perf_counter() - start
        logged = _logged_workers(log.name)
    finally:
        os.environ.pop(RSS_LOG_ENV, None)
        _remove(Path(log.name))
    exact = {p.pid for p in runner.procs}
    sampled = sampler.descendants(skip_children_of=runner.wrappers)
    for proc in sampled:  # a worker's own figure is exact; the sample may have missed its peak
        if proc.pid in logged:
            proc.peak_rss_kb = max(proc.peak_rss_kb, logged.pop(proc.pid))
            proc.name = "pool worker"
    sampled += [ProcStat(pid, "pool worker", kb, True) for pid, kb in sorted(logged.items())]  # never sampled
    procs = runner.procs + [p for p in sampled if p.pid not in exact]
    # CPU: wait4 covers a command and the children it reaped; pool workers reaped by a forkserver that
    # is never reaped itself escape it, the /proc samples (own CPU of every process) do not. Both are
    # lower bounds of the truth: take the larger per command.
    sampled_cpu = sampler.tree_cpu()
    cpu = sum(max(c, sampled_cpu.get(root, 0.0)) for root, c in runner.cpu_by_root.items())
    return RunStat(seconds=seconds, cpu_seconds=cpu, procs=procs, steps=steps, load_before=load)


# ----------------------------------------------------------------------------------------------------
# Corpus
# ----------------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    path: Path
    shards: list[Path]
    samples: int
    bytes: int
    generated: bool
    generate_seconds: float = 0.0
    spec: dict = field(default_factory=dict)


def _write_one(args: tuple[str, dict, int]) -> None:
    from dalle3_etl.devtools.synth import SynthSpec, write_shard, shard_name

    folder, spec, index = args
    write_shard(Path(folder) / f"{shard_name(index)}.tar", SynthSpec(**spec), index)


def generate_corpus(folder: Path, shards: int, per_shard: int, image_bytes: int, seed: int, workers: int) -> Corpus:
    """Write `shards` synthetic shards in parallel (synth.write_shard: same bytes whatever the worker
    count); reuse the folder if it already holds exactly this corpus."""
    from dalle3_etl.devtools.synth import shard_name

    spec = {"shards": shards, "per_shard": per_shard, "seed": seed, "image_bytes": image_bytes}
    marker = folder / "corpus.json"
    paths = [folder / f"{shard_name(i)}.tar" for i in range(shards)]
    start = time.perf_counter()
    reused = False
    if marker.exists() and json.loads(marker.read_text()) == spec and all(p.exists() for p in paths):
        reused = True
    else:
        _rmtree(folder)  # a corpus this command generated earlier with another spec
        folder.mkdir(parents=True)
        jobs = [(str(folder), spec, i) for i in range(shards)]
        if workers > 1 and shards > 1:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(_write_one, jobs))
        else:
            for job in jobs:
                _write_one(job)
        marker.write_text(json.dumps(spec))
    return Corpus(
        path=folder, shards=paths, samples=shards * per_shard, bytes=sum(p.stat().st_size for p in paths),
        generated=not reused, generate_seconds=0.0 if reused else time.perf_counter() - start, spec=spec,
    )


def existing_corpus(folder: Path) -> Corpus:
    """Shards the user already has: count samples (JSON members) by walking the tar headers."""
    from dalle3_etl.shard.samples import classify
    from dalle3_etl.shard.tarcompress import open_tar

    paths = sorted(folder.glob("*.tar"))
    if not paths:
        raise BenchError(f"no .tar shards in {folder}")
    samples = 0
    for path in paths:
        with open(path, "rb") as fh:
            for member in open_tar(fh):
                if member.problem is None and classify(member.name)[1] == "json":
                    samples += 1
    return Corpus(path=folder, shards=paths, samples=samples, bytes=sum(p.stat().st_size for p in paths),
                  generated=False, spec={"existing": str(folder)})


# ----------------------------------------------------------------------------------------------------
# Modes
# ----------------------------------------------------------------------------------------------------


def _rmtree(path: Path) -> None:
    """Remove a folder or file this command created (its work folders, corpora, temporary logs)."""
    Root(path.parent).remove_tree(path)


_remove = _rmtree


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

    def _script(self, *parts: str) -> str:
        path = self.cfg.scripts_dir.joinpath(*parts)
        if not path.exists():
            raise BenchError(f"{path} not found: run from a checkout of dalle3-etl (or pass --scripts-dir)")
        return str(path)

    def target(self, mode: str) -> Path:
        return self.work / mode

    def body(self, mode: str) -> Callable[[Runner], dict[str, float] | None]:
        out = self.target(mode)
        cfg = self.cfg
        if mode in CONVERT_MODES:
            workers = 1 if mode.endswith("-1w") else cfg.workers
            cmd = [self.python, "-m", "dalle3_etl", "convert", *self.shards, "-o", str(out), "-q",
                   "-w", str(workers), *CONVERT_MODES[mode]]
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
        if mode in CONVERT_MODES:
            data = out / "data"
            return {"rows": _parquet_rows(out / "dalle3.parquet"),
                    "captions": _count(data, (".txt",)) if data.exists() else 0,
                    "images": _count(data, (".jpg", ".jpeg", ".png", ".webp")) if data.exists() else 0}
        if mode == "tar-xf":
            return {"json": _count(out, (".json",)), "images": _count(out, (".jpg", ".jpeg", ".png", ".webp"))}
        if mode == "old-recipe":
            return {"rows": _parquet_rows(out / "dalle3.parquet"), "captions": _count(out / "data", (".txt",)),
                    "json": _count(out / "data", (".json",))}
        if mode == "webdataset":
            return {"rows": _parquet_rows(out / "dalle3.parquet"), "captions": _count(out / "data", (".txt",)),
                    "images": _count(out / "data", (".jpg", ".jpeg", ".png", ".webp"))}
        return {}

    def clean(self, mode: str) -> None:
        _rmtree(self.target(mode))


# ----------------------------------------------------------------------------------------------------
# Statistics, ratios, targets
# ----------------------------------------------------------------------------------------------------


def summarize(runs: list[RunStat], corpus: Corpus) -> dict:
    secs = [r.seconds for r in runs]
    med = statistics.median(secs)
    by_name: dict[str, int] = {}
    for r in runs:
        for p in r.procs:
            by_name[p.name] = max(by_name.get(p.name, 0), p.peak_rss_kb)
    steps: dict[str, float] = {}
    for name in runs[0].steps:
        steps[name] = statistics.median(r.steps[name] for r in runs)
    return {
        "median_s": med, "min_s": min(secs), "max_s": max(secs),
        "spread_pct": 100.0 * (max(secs) - min(secs)) / med if med else 0.0,
        "stdev_s": statistics.stdev(secs) if len(secs) > 1 else 0.0,
        "samples_per_s": corpus.samples / med if med else 0.0,
        "mb_per_s": corpus.bytes / 1e6 / med if med else 0.0,
        "cpu_s": statistics.median(r.cpu_seconds for r in runs),
        "peak_rss_mb": max(r.peak_rss_kb for r in runs) / 1024,
        "peak_rss_mb_by_process": {k: v / 1024 for k, v in sorted(by_name.items())},
        "processes": statistics.median(len(r.procs) for r in runs),
        "steps_median_s": steps,
        "check": runs[-1].check,
        "runs": [asdict(r) for r in runs],
    }


def ratios(results: dict[str, dict]) -> dict[str, dict]:
    """Every mode's median time over every baseline's (and the per-repetition range of that ratio)."""
    out: dict[str, dict] = {}
    for mode, res in results.items():
        for base in BASELINES:
            if base == mode or base not in results:
                continue
            per_rep = [a["seconds"] / b["seconds"] for a, b in zip(res["runs"], results[base]["runs"])]
            out[f"{mode} / {base}"] = {
                "ratio": res["median_s"] / results[base]["median_s"],
                "per_rep_min": min(per_rep), "per_rep_max": max(per_rep),
                "ratio_of_fastest": res["min_s"] / results[base]["min_s"],  # least disturbed runs of each
            }
    return out


def targets(results: dict[str, dict], memory: dict | None) -> list[dict]:
    def med(mode: str) -> float | None:
        return results[mode]["median_s"] if mode in results else None

    checks = []

    def add(name: str, measured: float | None, op: str, limit: float, how: str) -> None:
        if measured is None:
            checks.append({"target": name, "measured": None, "limit": f"{op} {limit}", "met": None, "how": how})
            return
        met = measured <= limit if op == "<=" else measured >= limit
        checks.append({"target": name, "measured": round(measured, 3), "limit": f"{op} {limit}", "met": met, "how": how})

    def ratio(a: str, b: str) -> float | None:
        x, y = med(a), med(b)
        return None if x is None or y is None else x / y

    add("parquet-only time vs GNU tar JSON read limit", ratio("convert-parquet", "tar-json"), "<=", 3.0,
        "convert-parquet / tar-json (median wall time)")
    add("full mode time vs plain parallel tar xf", ratio("convert-full", "tar-xf"), "<=", 1.5,
        "convert-full / tar-xf")
    add("full mode speed-up over the old recipe", ratio("old-recipe", "convert-full"), ">=", 5.0,
        "old-recipe / convert-full")
    add("2 workers vs 1 worker, parquet-only", ratio("convert-parquet-1w", "convert-parquet"), ">=", 1.8,
        "convert-parquet-1w / convert-parquet")
    convert_rss = [r["peak_rss_mb"] for m, r in results.items() if m in CONVERT_MODES]
    add("peak RSS of every convert process (MB)", max(convert_rss) if convert_rss else None, "<=", RSS_LIMIT_MB,
        "max over convert runs and their processes")
    if memory:
        add("peak RSS growth when shard size grows 10x", memory["size_10x_ratio"], "<=", 1 + FLAT_TOLERANCE,
            "max process peak RSS, 10x samples per shard / 1x")
        add("peak RSS growth when shard count grows 10x", memory["count_10x_ratio"], "<=", 1 + FLAT_TOLERANCE,
            "max process peak RSS, 10x shards / 1x")
    return checks


# ----------------------------------------------------------------------------------------------------
# Memory check (small scale)
# ----------------------------------------------------------------------------------------------------


def memory_check(cfg: BenchConfig, root: Path, log: Callable[[str], None]) -> dict:
    """Full-mode convert on corpora of 1x, 10x shard size and 10x shard count; peak RSS per process."""
    shards, per = cfg.memory_base
    cases = {"1x": (shards, per), "size_10x": (shards, per * 10), "count_10x": (shards * 10, per)}
    out: dict = {"cases": {}}
    for name, (n, p) in cases.items():
        corpus = generate_corpus(root / f"mem-{n}x{p}", n, p, cfg.image_bytes, cfg.seed, cfg.workers)
        target = root / f"mem-out-{name}"
        _rmtree(target)
        cmd = [sys.executable, "-m", "dalle3_etl", "convert", *map(str, corpus.shards), "-o", str(target), "-q",
               "-w", str(cfg.workers)]
        stat = measure(lambda r: r.run(cmd))
        _rmtree(target)
        by_name: dict[str, float] = {}
        for proc in stat.procs:
            by_name[proc.name] = max(by_name.get(proc.name, 0.0), proc.peak_rss_kb / 1024)
        # the busiest pool worker, and the driver process (sampled: the exact figure covers its children)
        workers = [p.peak_rss_kb / 1024 for p in stat.procs if p.name == "pool worker"]
        main = [p.peak_rss_kb / 1024 for p in stat.procs if p.name.endswith("(sampled)")]
        main = main or [p.peak_rss_kb / 1024 for p in stat.procs if p.exact]
        out["cases"][name] = {
            "shards": n, "per_shard": p, "samples": n * p, "corpus_mb": corpus.bytes / 1e6, "seconds": stat.seconds,
            "peak_rss_mb": stat.peak_rss_kb / 1024, "main_rss_mb": max(main, default=0.0),
            "worker_rss_mb": max(workers, default=0.0), "by_process_mb": by_name,
        }
        log(f"  memory {name:9s} {n:3d} shards x {p:6d} samples: peak RSS {stat.peak_rss_kb / 1024:6.1f} MB "
            f"(main {max(main, default=0.0):.1f}, busiest worker {max(workers, default=0.0):.1f})")
        if not cfg.keep_corpus:
            _rmtree(corpus.path)
    base = out["cases"]["1x"]["peak_rss_mb"]
    out["size_10x_ratio"] = out["cases"]["size_10x"]["peak_rss_mb"] / base
    out["count_10x_ratio"] = out["cases"]["count_10x"]["peak_rss_mb"] / base
    return out


# ----------------------------------------------------------------------------------------------------
# Profile (one shard, in-process)
# ----------------------------------------------------------------------------------------------------

STAGES = (
    "tar header walk", "JSON parse", "record building", "pairing + driver", "image header probe",
    "parquet write", "file creation", "other",
)


def _stage_of(filename: str, func: str) -> str:
    base = os.path.basename(filename)
    if filename == "~":  # C builtins
        if "orjson.loads" in func:
            return "JSON parse"
        if any(s in func for s in ("posix.pread", "posix.lseek", "posix.read", "posix.fstat")):
            return "tar header walk"
        if any(s in func for s in ("posix.open", "posix.write", "posix.close", "copy_file_range", "posix.mkdir",
                                   "posix.replace", "posix.rename", "posix.stat", "posix.unlink", "posix.rmdir",
                                   "posix.scandir", "posix.link", "posix.fsync")):
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
    if base == "records.py":
        return "record building"
    if base == "sinks.py":
        return "file creation" if func in ("path", "write_text") else "parquet write"
    if base in ("os.py", "shutil.py", "state.py") or "posixpath" in filename:
        return "file creation"
    if base in ("shard.py", "samples.py"):
        return "pairing + driver"
    return "other"


def profile_shard(shard: Path, work: Path, mode: str = "convert-full") -> dict:
    """cProfile one shard conversion in this process; self time grouped by stage."""
    import cProfile
    import pstats
    from dalle3_etl.settings import load_settings
    from dalle3_etl.shard.convert import convert_shard
    from dalle3_etl.sources.base import resolve_inputs
    from dalle3_etl.store.layout import Layout

    flags = CONVERT_MODES[mode]
    settings = load_settings(None, images="--no-images" not in flags, captions="--no-captions" not in flags)
    src = resolve_inputs([str(shard)])[0]

    def once(prof: cProfile.Profile | None = None) -> float:
        out = work / f"profile-{mode}"
        _rmtree(out)
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
    _rmtree(work / f"profile-{mode}")
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
        "mode": mode, "shard": str(shard), "wall_s_unprofiled": wall, "profiled_s": total,
        "stages": {s: {"seconds": v, "pct": 100 * v / total if total else 0.0} for s, v in by_stage.items()},
        "top_functions": [{"self_s": t, "function": f, "stage": s} for t, f, s in top[:15]],
    }


# ----------------------------------------------------------------------------------------------------
# Machine, output
# ----------------------------------------------------------------------------------------------------


def machine_info(location: Path) -> dict:
    info: dict = {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            _dev, mnt, fstype = line.split()[:3]
            if str(location.resolve()).startswith(mnt) and len(mnt) >= len(best):
                best, info["location_fs"] = mnt, fstype
    except OSError:
        pass
    try:
        info["tar"] = subprocess.run(["tar", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        pass
    return info


def code_version() -> dict:
    """The commit the converter ran from, and whether its package had uncommitted changes."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "dalle3_etl"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {}
    if head.returncode != 0:
        return {}
    return {"commit": head.stdout.strip(), "package_dirty": bool(dirty.stdout.strip())}


def print_table(result: dict, log: Callable[[str], None]) -> None:
    modes = result["modes"]
    log("")
    log(f"{'mode':20s} {'median s':>9s} {'min..max s':>15s} {'spread':>7s} {'samples/s':>10s} {'MB/s':>8s} "
        f"{'CPU s':>7s} {'peak RSS MB (per process)':s}")
    for name, r in modes.items():
        per = ", ".join(f"{k} {v:.0f}" for k, v in r["peak_rss_mb_by_process"].items())
        log(f"{name:20s} {r['median_s']:9.2f} {r['min_s']:7.2f}..{r['max_s']:<7.2f} {r['spread_pct']:6.1f}% "
            f"{r['samples_per_s']:10.0f} {r['mb_per_s']:8.1f} {r['cpu_s']:7.1f} {per}")
        if r["steps_median_s"]:
            log(" " * 22 + "steps: " + ", ".join(f"{k} {v:.2f}s" for k, v in r["steps_median_s"].items()))
    log("")
    log("ratios of median wall time (per-repetition range; ratio of the fastest runs):")
    for name, r in result["ratios"].items():
        log(f"  {name:36s} {r['ratio']:7.2f}x  ({r['per_rep_min']:.2f}..{r['per_rep_max']:.2f}; "
            f"fastest {r['ratio_of_fastest']:.2f}x)")
    log("")
    log("targets:")
    for t in result["targets"]:
        status = "n/a" if t["met"] is None else ("MET" if t["met"] else "NOT MET")
        log(f"  [{status:7s}] {t['target']}: {t['measured']} (target {t['limit']}; {t['how']})")


def write_chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = result["modes"]
    names = list(modes)
    med = [modes[n]["median_s"] for n in names]
    lo = [modes[n]["median_s"] - modes[n]["min_s"] for n in names]
    hi = [modes[n]["max_s"] - modes[n]["median_s"] for n in names]
    rss = [modes[n]["peak_rss_mb"] for n in names]
    colors = ["tab:blue" if n.startswith("convert") else "tab:gray" if n.startswith("tar") else "tab:orange"
              for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.5 * len(names) + 2), sharey=True)
    y = range(len(names))
    ax1.barh(y, med, xerr=[lo, hi], color=colors, capsize=3)
    for i, (m, n) in enumerate(zip(med, names)):
        ax1.text(modes[n]["max_s"], i, f" {m:.1f}s  {modes[n]['samples_per_s']:,.0f}/s", va="center", fontsize=8)
    ax1.set_yticks(list(y), names)
    ax1.invert_yaxis()
    ax1.set_xlabel("wall time, seconds (median, min..max)")
    ax1.set_xlim(0, max(modes[n]["max_s"] for n in names) * 1.4 if names else 1)
    ax2.barh(y, rss, color=colors)
    ax2.axvline(RSS_LIMIT_MB, color="red", linestyle="--", linewidth=1)
    ax2.set_xlabel("peak RSS of the largest process, MB")
    c = result["corpus"]
    fig.suptitle(f"{c['samples']:,} samples, {c['shards']} shards, {c['bytes'] / 1e9:.2f} GB on "
                 f"{result['machine'].get('location_fs', '?')} ({result['config']['location']}); "
                 f"{result['config']['workers']} workers, {result['config']['reps']} reps; "
                 f"{result['machine'].get('cores')} cores", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------


def run_bench(cfg: BenchConfig, log: Callable[[str], None] | None = None) -> dict:
    if log is None:
        log = (lambda s: None) if cfg.quiet else (lambda s: print(plain(s), flush=True))  # lines quote paths
    for mode in cfg.modes:
        if mode not in ALL_MODES:
            raise BenchError(f"unknown mode {mode!r} (choose from {', '.join(ALL_MODES)})")
    if cfg.reps < 1 or cfg.workers < 1 or cfg.samples < 1 or cfg.shards < 1:
        raise BenchError("--reps, --workers, --samples and --shards must be at least 1")
    root = Path(cfg.location) / f"dalle3-etl-bench-{os.getpid()}"
    corpus_root = Path(cfg.location) / "dalle3-etl-bench-corpus"
    work = root / "work"
    work.mkdir(parents=True)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    generated: Path | None = None
    try:
        if cfg.corpus is not None:
            corpus = existing_corpus(Path(cfg.corpus))
        else:
            folder = generated = corpus_root / f"{cfg.shards}x{cfg.per_shard}-{cfg.image_bytes}b-s{cfg.seed}"
            log(f"corpus: {cfg.shards} shards x {cfg.per_shard} samples, ~{cfg.image_bytes} B images in {folder}")
            corpus = generate_corpus(folder, cfg.shards, cfg.per_shard, cfg.image_bytes, cfg.seed, cfg.workers)
            log(f"  {'generated' if corpus.generated else 'reused'}: {corpus.samples:,} samples, "
                f"{corpus.bytes / 1e9:.2f} GB" + (f" in {corpus.generate_seconds:.1f}s" if corpus.generated else ""))
        version = code_version()  # at the start: the tree may change while the bench runs
        modes = Modes(cfg, corpus, work)
        bodies = {m: modes.body(m) for m in cfg.modes}  # fails early if a script is missing
        runs: dict[str, list[RunStat]] = {m: [] for m in cfg.modes}
        order = list(cfg.modes)
        for rep in range(cfg.reps):
            for mode in order:
                modes.clean(mode)
                stat = measure(bodies[mode])
                stat.check = modes.check(mode)
                modes.clean(mode)
                runs[mode].append(stat)
                log(f"rep {rep + 1}/{cfg.reps} {mode:20s} {stat.seconds:8.2f}s  "
                    f"{corpus.samples / stat.seconds:9.0f} samples/s  peak RSS {stat.peak_rss_kb / 1024:6.1f} MB  "
                    f"load {stat.load_before:.1f}  {stat.check}")
            order = order[1:] + order[:1]  # rotate: no mode always runs first (cold) or after the same one
        results = {m: summarize(runs[m], corpus) for m in cfg.modes}
        memory = None
        if cfg.memory_check:
            log("memory check (convert full mode):")
            memory = memory_check(cfg, corpus_root, log)
        profile = None
        if cfg.profile:
            log("profiling one shard conversion (cProfile) ...")
            profile = {m: profile_shard(corpus.shards[0], work, m) for m in ("convert-parquet", "convert-full")}
        result = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine_info(Path(cfg.location)),
            "code": version,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            "corpus": {"path": str(corpus.path), "shards": len(corpus.shards), "samples": corpus.samples,
                       "bytes": corpus.bytes, "spec": corpus.spec, "generated": corpus.generated,
                       "generate_seconds": corpus.generate_seconds},
            "modes": results,
            "ratios": ratios(results),
            "memory_check": memory,
            "targets": targets(results, memory),
            "profile": profile,
        }
        print_table(result, log)
        if memory:
            log(f"memory flatness: 10x shard size -> {memory['size_10x_ratio']:.3f}x peak RSS, "
                f"10x shard count -> {memory['count_10x_ratio']:.3f}x")
        if profile:
            for m, p in profile.items():
                log(f"profile {m} (one shard, {p['wall_s_unprofiled']:.2f}s unprofiled, {p['profiled_s']:.2f}s profiled):")
                for s, v in p["stages"].items():
                    log(f"  {s:20s} {v['seconds']:7.3f}s {v['pct']:5.1f}%")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        json_path = out_dir / f"bench-{stamp}.json"
        json_path.write_text(json.dumps(result, indent=1))
        shutil.copyfile(json_path, out_dir / "latest.json")
        png = out_dir / "latest.png"
        write_chart(result, png)
        result["files"] = {"json": str(json_path), "latest": str(out_dir / "latest.json"), "chart": str(png)}
        log(f"wrote {json_path}, {out_dir / 'latest.json'} and {png}")
        return result
    finally:
        _rmtree(root)
        if not cfg.keep_corpus:  # what this run generated; never a --corpus the user passed
            for folder in ([generated] if generated else []) + list(corpus_root.glob("mem-*")):
                _rmtree(folder)
            if corpus_root.is_dir() and not any(corpus_root.iterdir()):
                _rmtree(corpus_root)


# ----------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------


def add_cli(app) -> None:
    import typer

    @app.command()
    def bench(
        samples: int = typer.Option(200_000, help="Samples in the generated corpus."),
        shards: int = typer.Option(12, help="Shards in the generated corpus."),
        image_bytes: int = typer.Option(4_000, help="Approximate bytes per image."),
        location: Path = typer.Option(Path("/dev/shm"), help="Where the corpus and all outputs go (/dev/shm: no disk)."),
        reps: int = typer.Option(3, help="Repetitions of every mode (alternated within the run)."),
        workers: int = typer.Option(2, "--workers", "-w", help="Worker processes for convert, webdataset and tar."),
        modes: str = typer.Option(",".join(ALL_MODES), help="Comma-separated modes to run."),
        out: Path = typer.Option(Path("benchmarks/results"), "--out", "-o", help="Folder for the JSON result and PNG chart."),
        corpus: Path = typer.Option(None, help="Benchmark these existing shards (*.tar) instead of a generated corpus."),
        keep_corpus: bool = typer.Option(False, help="Keep the generated corpus for the next run."),
        memory_check: bool = typer.Option(True, "--memory-check/--no-memory-check",
                                          help="Peak RSS at 1x vs 10x shard size and shard count."),
        memory_base: str = typer.Option("2x2000", help="SHARDSxSAMPLES of the 1x memory-check corpus."),
        profile: bool = typer.Option(False, help="Also cProfile one shard conversion, time per stage."),
        scripts_dir: Path = typer.Option(SCRIPTS_DIR, help="Folder holding old_recipe/ and wds_baseline.py."),
    ) -> None:
        """Benchmark convert against the old recipe, a webdataset script and GNU tar (timings, RSS, ratios)."""
        from dalle3_etl.cli import fail_usage, print_error

        try:
            base_shards, base_per = (int(x) for x in memory_base.lower().split("x"))
        except ValueError:
            fail_usage("--memory-base must look like 2x2000")
        cfg = BenchConfig(
            samples=samples, shards=shards, image_bytes=image_bytes, location=location, reps=reps, workers=workers,
            modes=tuple(m.strip() for m in modes.split(",") if m.strip()), out_dir=out, corpus=corpus,
            keep_corpus=keep_corpus, memory_check=memory_check, memory_base=(base_shards, base_per),
            profile=profile, scripts_dir=scripts_dir,
        )
        try:
            run_bench(cfg)
        except BenchError as exc:
            print_error(str(exc))
            raise typer.Exit(1)


__all__ = ["BenchConfig", "run_bench", "add_cli", "ALL_MODES", "BenchError", "profile_shard"]
