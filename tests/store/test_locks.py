"""The run lock: one run per output directory; `lock_holder` names the run holding it."""

from __future__ import annotations

import os

import pytest

from dalle3_etl.store.layout import Layout, StateError
from dalle3_etl.store.locks import RunLock, lock_holder


def test_a_second_lock_on_the_same_output_is_refused_and_free_after_release(tmp_path):
    layout = Layout(tmp_path / "out")
    layout.ensure()
    first = RunLock(layout.lock, layout.workers_lock)
    first.acquire()
    try:
        assert lock_holder(layout) == f"{os.uname().nodename} {os.getpid()}"
        with pytest.raises(StateError, match=f"another dalle3-etl run is using .*{os.getpid()}"):
            RunLock(layout.lock, layout.workers_lock).acquire()
    finally:
        first.release()
    assert lock_holder(layout) is None
    with RunLock(layout.lock, layout.workers_lock):
        pass
