"""`python measure.py CMD...`: run CMD and print the CPU seconds of it and all its descendants.

Run as a script by the split bench (`bench.split.time_convert`): standard library only, so its own start (a few
milliseconds, no import of the package: importing `dalle3_etl.devtools.bench` took ~0.17 s) adds nothing to the
wall time it measures. On Linux this process becomes the subreaper of CMD's descendants, so the fork server and its
workers (which the driver does not wait for) are reparented here and counted once waited for; elsewhere only the
waited-for ones count. A process of its own, so no other child of the caller is ever waited for here.
"""

import os
import resource
import subprocess
import sys


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # descendants that were waited for
    return usage.ru_utime + usage.ru_stime


def main(command: list[str]) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    subprocess.run(command, check=True)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    print(children_cpu())


if __name__ == "__main__":
    main(sys.argv[1:])
