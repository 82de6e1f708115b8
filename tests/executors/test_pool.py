"""The local pool's head start: `dalle3-etl convert` starts the fork server before typer and the conversion code
load, only when its words ask for a local pool of 2 or more workers; importing the CLI package (what every pool
worker does again) loads neither typer nor rich."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dalle3_etl.executors import pool


@pytest.fixture
def starts(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(pool, "prestart_workers", lambda: calls.append(1))
    monkeypatch.setattr(pool, "default_workers", lambda: 8)
    return calls


@pytest.mark.parametrize(
    "argv",
    [
        ["convert", "in", "-o", "out"],
        ["convert", "in", "-o", "out", "-w", "2"],
        ["convert", "in", "-o", "out", "--workers=4"],
        ["convert", "in", "-o", "out", "-w3"],
        ["convert", "in", "-o", "out", "--executor", "local"],
    ],
)
def test_started_for_a_local_pool(starts, argv):
    pool.prestart_early(argv)
    assert starts == [1]


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "out"],
        ["convert", "--help"],
        ["convert", "in", "-o", "out", "-w", "1"],
        ["convert", "in", "-o", "out", "--workers=1"],
        ["convert", "in", "-o", "out", "-w", "zero"],
        ["convert", "in", "-o", "out", "--executor", "ray"],
        ["convert", "in", "-o", "out", "--executor=ray", "-w", "4"],
        [],
    ],
)
def test_not_started_otherwise(starts, argv):
    pool.prestart_early(argv)
    assert starts == []


def test_not_started_on_one_core(monkeypatch, starts):
    monkeypatch.setattr(pool, "default_workers", lambda: 1)
    pool.prestart_early(["convert", "in", "-o", "out"])
    assert starts == []
    pool.prestart_early(["convert", "in", "-o", "out", "-w", "2"])  # asked for: started
    assert starts == [1]


def test_cli_package_import_is_light():
    code = "import sys, dalle3_etl.cli; print(sorted(m for m in ('typer', 'rich', 'pyarrow') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert done.stdout.strip() == "[]"
    code = "from dalle3_etl.cli import app; print(type(app).__name__, [c.name or c.callback.__name__ for c in app.registered_commands])"
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert done.stdout.startswith("Typer ") and "'convert'" in done.stdout and "'verify'" in done.stdout
