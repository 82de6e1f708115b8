"""Picking the executor of a run (`convert --executor`, `--workers`): kept apart from `base` and the
executors so that no module of `executors` imports one that imports it back.
"""

from __future__ import annotations

from dalle3_etl.executors.base import Executor
from dalle3_etl.executors.local import InlineExecutor, LocalExecutor
from dalle3_etl.executors.pool import EXECUTORS


def make_executor(name: str, workers: int, ray_address: str | None = None) -> Executor:
    if name == "local":
        return InlineExecutor() if workers == 1 else LocalExecutor(workers)
    if name == "ray":
        from dalle3_etl.executors.ray import RayExecutor  # optional dependency

        return RayExecutor(address=ray_address)
    raise ValueError(f"unknown executor {name!r} (use one of: {', '.join(EXECUTORS)})")


__all__ = ["make_executor"]
