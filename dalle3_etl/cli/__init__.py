"""The `dalle3-etl` command line (typer): one module per group of commands, all on one `app`.

`core` (the typer `app`; `command`: an `EtlError` becomes one line on stderr and its exit code) -> `convert` ->
`checks` (status, verify, head, stats) -> `entry` -> `tools` (synth, download, bench). Each module registers its
commands on `app` when imported, in this order, which is the order `--help` lists them in. Below `cli` nothing
exits and nothing imports typer.

Importing this package imports none of that: `app` is built on first use (`from dalle3_etl.cli import app`).
Every pool worker re-imports the script that started the run (`dalle3-etl` is `from dalle3_etl.cli import
main`), and `main` starts the pool's fork server before typer and rich load (`executors.pool.prestart_early`):
both were ~0.1 s on the path to the first task.
"""

from __future__ import annotations

import sys
from importlib import import_module

COMMAND_MODULES = ("convert", "checks", "entry", "tools")


def _load_app():
    from dalle3_etl.cli.core import app

    for module in COMMAND_MODULES:
        import_module(f"dalle3_etl.cli.{module}")
    return app


def main() -> None:
    try:
        from dalle3_etl.executors.pool import prestart_early

        prestart_early(sys.argv[1:])
        app = _load_app()
    except KeyboardInterrupt:  # Ctrl-C while the command is still loading: nothing started, no traceback
        sys.exit(130)
    app()


def __getattr__(name: str):
    if name == "app":
        return _load_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app", "main"]
