"""How many pool workers, how they are started, and starting them early.

Kept apart from the executors and light to import (no pyarrow): the CLI starts the fork server from
here before it imports the conversion code, so the two imports overlap.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys

#: The executors `executors.choose.make_executor` builds (`convert --executor`); here so the CLI can check a
#: name before it imports the conversion code.
EXECUTORS = ("local", "ray")

#: Imported once by the fork server, so every pool worker starts with them loaded: `executors.local`
#: holds what a worker runs (its initializer and task) and brings, through `executors.base`, the whole
#: conversion (shard, pyarrow, Pillow); `cli` is what a worker's re-import of the main script
#: (`dalle3-etl`) needs. Missing modules are skipped by multiprocessing.
WORKER_PRELOAD = ("dalle3_etl.cli", "dalle3_etl.executors.local")


def mp_context():
    if sys.platform.startswith("linux"):
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(list(WORKER_PRELOAD))
        return ctx
    return mp.get_context("spawn")


def prestart_workers() -> None:
    """Start the fork server now (Linux), so its imports run while the driver plans the run.

    Without this the fork server starts at the first task and each worker waits for it; with it the
    workers fork from an already warm process. A no-op where there is no fork server (macOS: spawn).
    """
    ctx = mp_context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1
