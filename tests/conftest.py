"""Shared fixtures: generated corpora and converted outputs, built once per session where read-only."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dalle3_etl.devtools.synth import SynthSpec, write_corpus
from dalle3_etl.run.pipeline import run_convert
from dalle3_etl.settings import load_settings
from dalle3_etl.sources.resolve import resolve_inputs


def convert(inputs, out: Path, **overrides):
    """Run a conversion the way the CLI does, returning the RunSummary."""
    settings = load_settings(
        None, **{k: v for k, v in overrides.items() if k not in ("restart_run", "retry_failed", "executor")}
    )
    opts = {k: overrides[k] for k in ("restart_run", "retry_failed", "executor") if k in overrides}
    return run_convert(resolve_inputs([str(i) for i in inputs]), out, settings, **opts)


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file (bytes) and symlink (its target) below root, without following links."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                out[rel] = path.read_bytes()
    return out


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """3 shards x 40 samples, every synth case (fallback captions, missing sizes, no caption) present."""
    root = tmp_path_factory.mktemp("corpus")
    truth = write_corpus(root, SynthSpec(shards=3, per_shard=40, seed=7, image_bytes=3000))
    return root, truth


@pytest.fixture(scope="session")
def converted(corpus, tmp_path_factory):
    """The corpus converted once with default settings and 2 workers (read-only for tests)."""
    root, truth = corpus
    out = tmp_path_factory.mktemp("converted") / "out"
    summary = convert([root], out, workers=2)
    return out, truth, summary


@pytest.fixture
def converted_copy(converted, tmp_path):
    """A private copy of the converted output that a test may damage."""
    out, truth, summary = converted
    dst = tmp_path / "out"
    shutil.copytree(out, dst, symlinks=True)
    return dst, truth


SHM = Path("/dev/shm")


def _mapped_semaphores() -> set[str]:
    """Names of the POSIX semaphores some live process has mapped (`/proc/<pid>/maps`)."""
    names: set[str] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps") as fh:
                names.update(line.rsplit("/", 1)[1].strip() for line in fh if "/dev/shm/sem." in line)
        except OSError:
            continue
    return names


@pytest.fixture(scope="session", autouse=True)
def _no_semaphores_left_by_killed_runs():
    """Tests that SIGKILL a run's whole process group (`store.crash`) kill multiprocessing's resource tracker with
    it, so the run's named semaphores stay in /dev/shm. After the session, remove those that appeared during it and
    that no live process has mapped (a semaphore in use is always mapped by its users)."""
    if not (SHM.is_dir() and Path("/proc/self/maps").exists()):
        yield
        return
    before = {p.name for p in SHM.glob("sem.mp-*")}
    yield
    mapped = _mapped_semaphores()
    for path in SHM.glob("sem.mp-*"):
        if path.name in before or path.name in mapped:
            continue
        try:
            if path.lstat().st_uid == os.getuid():  # ours: another user's is not this session's
                path.unlink()
        except OSError:
            pass
