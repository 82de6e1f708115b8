"""Commands that read an output: `status`, `verify`, `head`, `stats`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from dalle3_etl.cli.core import command
from dalle3_etl.errors import UsageError
from dalle3_etl.safetext import safe


@command()
def status(out: Path = typer.Argument(..., help="An output directory of convert.")) -> None:
    """Shards done / failed / pending (of those seen), with counts."""
    from dalle3_etl.check.status import print_status
    from dalle3_etl.store.layout import Layout

    if not Layout(out).state.is_dir():
        raise UsageError(f"{out} is not a dalle3-etl output directory")
    print_status(out)


@command("verify")
def verify_cmd(
    out: Path = typer.Argument(..., help="An output directory of convert."),
    deep: bool = typer.Option(False, "--deep", help="Also re-read every image header and compare width/height."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    mount_path: Path | None = typer.Option(
        None, "--mount-path", metavar="PATH", help="Check an entry written for this path (`entry --mount-path`)."
    ),
) -> None:
    """Check that SimpleTuner can start on OUT and everything is there. Exit 0 only when every check holds."""
    import orjson

    from dalle3_etl.check.report import print_report
    from dalle3_etl.check.target import is_output_dir
    from dalle3_etl.check.verify import verify

    if not is_output_dir(out):
        raise UsageError(f"{out} is not a dalle3-etl output directory")
    console = Console()
    status_console = Console(stderr=True)
    if as_json or not status_console.is_terminal:
        report = verify(out, deep=deep, mount_path=mount_path)
    else:
        with status_console.status("verifying") as status:
            report = verify(out, deep=deep, mount_path=mount_path, progress=lambda text: status.update(safe(text)))
    if as_json:
        typer.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print_report(report, console)
    raise typer.Exit(0 if report.ok else 1)


@command("head")
def head_cmd(
    out: Path = typer.Argument(..., help="An output directory of convert."),
    rows: int = typer.Option(10, "-n", "--rows", min=1, help="Number of rows to show."),
) -> None:
    """The first rows of the parquet as a table (captions shortened to the terminal width)."""
    from dalle3_etl.check.head import head_table

    console = Console()
    console.print(head_table(out, rows, console.width))


@command("stats")
def stats_cmd(
    out: Path = typer.Argument(..., help="An output directory of convert."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Also draw resolution and caption-length histograms to this PNG."
    ),
    top: int = typer.Option(10, "--top", min=1, help="How many sources and resolutions to list."),
) -> None:
    """Samples, bytes, rows by shard / source / resolution, caption lengths, rejects by reason."""
    import orjson

    from dalle3_etl.check.stats import compute_stats, plot_stats, print_stats, require_matplotlib

    if plot is not None:
        require_matplotlib()
    stats = compute_stats(out)
    if as_json:
        typer.echo(orjson.dumps(stats.to_json(top), option=orjson.OPT_INDENT_2).decode())
    else:
        print_stats(stats, top, Console())
    if plot is not None:
        plot_stats(stats, plot, top)
        if not as_json:
            Console().print(safe(f"plot written to {plot}"))
