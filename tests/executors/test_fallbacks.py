"""The portable paths behind each Linux-only fast path, forced here on Linux (macOS takes them for real):
the `spawn` start method instead of the fork server, the poll that stops an orphaned worker instead of a pidfd,
`os.cpu_count` instead of the CPU affinity, and `os.sync` instead of `syncfs`."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import convert, tree

from dalle3_etl.devtools.synth import SynthSpec, write_corpus
from dalle3_etl.executors import local, pool
from dalle3_etl.store import crash


def test_off_linux_the_pool_spawns_its_workers(monkeypatch):
    monkeypatch.setattr(pool.sys, "platform", "darwin")
    assert pool.mp_context().get_start_method() == "spawn"


def test_a_spawned_pool_writes_the_same_bytes_as_one_worker(monkeypatch, tmp_path):
    src = tmp_path / "src"
    write_corpus(src, SynthSpec(shards=3, per_shard=10, seed=4, image_bytes=900))
    one = tmp_path / "one"
    assert convert([src], one, workers=1).exit_code == 0
    monkeypatch.setattr(local, "mp_context", lambda: mp.get_context("spawn"))  # what macOS uses
    spawned = tmp_path / "spawned"
    assert convert([src], spawned, workers=2).exit_code == 0
    assert (spawned / "dalle3.parquet").read_bytes() == (one / "dalle3.parquet").read_bytes()
    assert tree(spawned / "data") == tree(one / "data")


def test_without_a_pidfd_an_orphaned_worker_still_dies_with_its_driver(tmp_path):
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    code = (
        "import os, time\n"
        "del os.pidfd_open\n"  # no pidfd (macOS, an old kernel): the worker polls its driver
        "from dalle3_etl.executors.local import _die_with_driver\n"
        f"_die_with_driver({driver.pid})\n"
        "print('watching', flush=True)\n"
        "time.sleep(60)\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "watching"
        driver.kill()
        driver.wait()
        assert worker.wait(timeout=10) == -signal.SIGKILL
    finally:
        for proc in (driver, worker):
            if proc.poll() is None:
                proc.kill()


def test_without_cpu_affinity_the_default_workers_are_the_cpu_count(monkeypatch):
    monkeypatch.delattr(pool.os, "sched_getaffinity", raising=False)
    assert pool.default_workers() == (os.cpu_count() or 1)


def test_without_syncfs_the_whole_system_is_synced(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(crash, "_libc", lambda: object())  # a libc without syncfs
    monkeypatch.setattr(crash.os, "sync", lambda: calls.append(time.monotonic()))
    crash.sync_filesystem(Path(tmp_path))
    assert len(calls) == 1
