"""Running commands and measuring them: wall and CPU time, and the peak RSS of every process a command
starts (exact through `/usr/bin/time` and wait4, sampled from /proc for the processes further down,
logged by convert's pool workers themselves)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dalle3_etl.devtools.bench.config import POLL_SECONDS, BenchError, _rmtree


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
                _rmtree(Path(proc.rss_file), Path(tempfile.gettempdir()))
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
        _rmtree(Path(log.name), Path(tempfile.gettempdir()))
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
