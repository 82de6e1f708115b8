"""The split bench's CPU figure (`bench/measure.py`) counts the processes a run leaves to others (fork server, workers)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dalle3_etl.devtools.bench.split import MEASURE

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a subreaper is Linux's")
def test_an_orphaned_descendant_is_counted():
    # the shell starts a busy process in the background and exits at once: nobody waits for the busy one but us
    orphan = f"({sys.executable} -c '{BUSY}' &)"
    done = subprocess.run([*MEASURE, "sh", "-c", orphan], stdout=subprocess.PIPE, text=True)
    assert done.returncode == 0
    assert float(done.stdout.split()[-1]) >= 0.3


def test_the_measuring_process_imports_nothing_of_the_package():
    """Its start is inside the measured wall time: the standard library only."""
    done = subprocess.run([sys.executable, "-X", "importtime", *MEASURE[1:], "true"], capture_output=True, text=True)
    assert done.returncode == 0 and float(done.stdout.split()[-1]) >= 0
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line]
    assert "subprocess" in imported and not [name for name in imported if name.startswith("dalle3_etl")]
