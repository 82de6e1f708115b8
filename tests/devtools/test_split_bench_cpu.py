"""The split bench's CPU figure (`measure_child`) counts the processes a run leaves to others (fork server, workers)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dalle3_etl.devtools.bench.split import _MEASURE

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a subreaper is Linux's")
def test_an_orphaned_descendant_is_counted():
    # the shell starts a busy process in the background and exits at once: nobody waits for the busy one but us
    orphan = f"({sys.executable} -c '{BUSY}' &)"
    done = subprocess.run([sys.executable, "-c", _MEASURE, "sh", "-c", orphan], stdout=subprocess.PIPE, text=True)
    assert done.returncode == 0
    assert float(done.stdout.split()[-1]) >= 0.3
