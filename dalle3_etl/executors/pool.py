"""How many pool workers, how they are started, and starting them early.

Kept apart from the executors and light to import (no pyarrow): the CLI starts the fork server from
here before it imports the conversion code, so the two imports overlap.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import sys
from collections.abc import Callable

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


def drain(progress_queue, on_progress: Callable[..., None]) -> None:
    """Hand every item the pool's workers put on `progress_queue` so far (a tuple of arguments) to `on_progress`."""
    while True:
        try:
            item = progress_queue.get_nowait()
        except (queue.Empty, OSError, ValueError):
            return
        on_progress(*item)


def prestart_workers() -> None:
    """Start the fork server now (Linux), so its imports run while the driver plans the run.

    Without this the fork server starts at the first task and each worker waits for it; with it the
    workers fork from an already warm process. A no-op where there is no fork server (macOS: spawn).
    """
    ctx = mp_context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def prestart_early(argv: list[str]) -> None:
    """`prestart_workers` at the very top of `dalle3-etl convert`, before typer and the conversion code load,
    when the words on the command line ask for a local pool of 2 or more workers.

    Only a head start: `convert` calls `prestart_workers` again once its settings are known (a no-op if the
    server runs). Whatever the words cannot tell (a --config setting `workers = 1`, a usage error found
    later) leaves a fork server that was not needed; it does nothing and ends with the run.
    """
    if argv[:1] != ["convert"] or "--help" in argv:
        return
    executor, workers = "local", None
    for word, after in zip(argv[1:], [*argv[2:], ""]):
        name, eq, value = word.partition("=")
        if name == "--executor":
            executor = value if eq else after
        elif name in ("-w", "--workers"):
            workers = value if eq else after
        elif word.startswith("-w") and word[2:].isdigit():
            workers = word[2:]
    if executor != "local" or (workers is not None and not (workers.isdigit() and int(workers) > 1)):
        return
    if workers is None and default_workers() < 2:
        return
    prestart_workers()


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1
