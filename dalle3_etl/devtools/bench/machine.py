"""What a result records about where it ran: the machine, the code version, and paths made portable
(never an absolute path of this machine)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import dalle3_etl

PACKAGE_DIR = Path(dalle3_etl.__file__).resolve().parent


def portable(path: Path | str) -> str:
    """A path as a result records it: a relative path as given; under the folder holding the package (a
    checkout's root, or site-packages) relative to it; anything else by its name alone."""
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    try:
        return str(p.resolve().relative_to(PACKAGE_DIR.parent))
    except ValueError:
        return p.name


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


def loop_s(processes: int = 1, n: int = 5_000_000) -> float:
    """Wall seconds of a fixed pure-Python loop run in `processes` processes at once: how fast this machine is right
    now, and whether it really gives that many cores (the time then stays that of one). A shared VM's speed drifts
    (this loop in one process took 0.58 s, then 0.97 s within an hour here), so a bench records it beside its
    timings."""
    code = f"def loop():\n    t = 0\n    for i in range({n}):\n        t += i\n\n\nloop()\n"
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-S", "-c", code]) for _ in range(processes)]
    for proc in procs:
        proc.wait()
    return time.perf_counter() - start


def code_version() -> dict:
    """The commit the converter ran from, and whether its package had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(PACKAGE_DIR), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(PACKAGE_DIR), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if head.returncode != 0:
        return {}
    return {"commit": head.stdout.strip(), "package_dirty": bool(dirty.stdout.strip())}
