"""The `dalle3-etl` application: the typer app, how a command's errors become exit codes (`command`), and
small helpers shared by the command modules.

Exit codes: 0 every shard read (rejected samples are not failures), 1 some shard failed or was
damaged, 2 usage error (bad arguments, settings that conflict with an existing output, output
locked), 130 interrupted (Ctrl-C), 143 stopped by SIGTERM.
"""

from __future__ import annotations

import functools

import typer
from rich.console import Console
from rich.text import Text

from dalle3_etl.errors import EtlError
from dalle3_etl.safetext import plain

app = typer.Typer(
    name="dalle3-etl",
    help="Turn image-caption tar shards (DALLE-3 1M) into a SimpleTuner-ready dataset in one parallel, "
    "streaming, resumable pass.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM


def print_error(message: str) -> None:
    # plain, not markup: messages quote paths, names and commands that hold [brackets] (pip install 'dalle3-etl[ray]')
    Console(stderr=True, soft_wrap=True).print(Text.assemble(("error:", "red"), " ", plain(message)))


def command(name: str | None = None):
    """Register a command whose `EtlError`s all end the same way: one line on stderr, the error's exit code.
    Below `cli` nothing exits and nothing imports typer; this is where an error becomes an exit code."""

    def register(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except EtlError as exc:
                print_error(str(exc))
                raise typer.Exit(exc.exit_code) from None

        return app.command(name)(run)

    return register


def csv_list(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())
