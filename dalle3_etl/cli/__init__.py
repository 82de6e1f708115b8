"""The `dalle3-etl` command line (typer): one module per group of commands, all on one `app`.

`app` (the typer app; `command`: an `EtlError` becomes one line on stderr and its exit code) -> `convert` ->
`checks` (status, verify, head, stats) -> `entry` -> `tools` (synth, download, bench). Each module registers its
commands on `app` when imported, in this order, which is the order `--help` lists them in. Below `cli` nothing
exits and nothing imports typer.
"""

from importlib import import_module

from dalle3_etl.cli.app import app, main

for _module in ("convert", "checks", "entry", "tools"):
    import_module(f"dalle3_etl.cli.{_module}")

__all__ = ["app", "main"]
