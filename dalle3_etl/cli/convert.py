"""`dalle3-etl convert`: settings from flags and --config, the inputs, then a run (or a dry run) and its exit code;
SIGTERM stops it the way Ctrl-C does."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer
from rich.console import Console

from dalle3_etl.cli.core import EXIT_INTERRUPTED, EXIT_TERMINATED, command, csv_list
from dalle3_etl.errors import UsageError
from dalle3_etl.executors.pool import EXECUTORS, default_workers, prestart_workers
from dalle3_etl.safetext import plain
from dalle3_etl.settings import load_settings
from dalle3_etl.sources.folder import check_folder_inputs
from dalle3_etl.sources.resolve import resolve_inputs


# Over 60 lines: one line per option declaration (typer); the body is about 30 lines.
@command()
def convert(
    inputs: list[str] = typer.Argument(
        ..., help="Shard files, directories, globs, or hf://datasets/<repo>\\[@rev]/<path>."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (created; resumable)."),
    config: Path | None = typer.Option(None, "--config", help="TOML settings file (see config/default.toml)."),
    workers: int | None = typer.Option(None, "--workers", "-w", help="Worker processes (default: all cores)."),
    task_bytes: int | None = typer.Option(
        None, "--task-bytes", help="Split shards into tasks of ~this size (the run's last round: a quarter)."
    ),
    caption_field: str | None = typer.Option(None, help="JSON field used as the caption; .txt: the text member."),
    caption_fallbacks: str | None = typer.Option(
        None, help="Comma-separated fields tried in order when the caption is empty."
    ),
    fields: str | None = typer.Option(None, help="Comma-separated extra JSON fields to copy into the parquet."),
    images: bool | None = typer.Option(None, "--images/--no-images", help="Copy image bytes into OUT/data."),
    captions: bool | None = typer.Option(
        None, "--captions/--no-captions", help="Write <image stem>.txt caption files."
    ),
    flat: bool | None = typer.Option(
        None, "--flat/--subfolders", help="All images directly in OUT/data (refuses clashing names)."
    ),
    max_json_bytes: int | None = typer.Option(None, help="Reject JSON members larger than this."),
    min_side: int | None = typer.Option(None, metavar="PX", help="Keep images whose shorter side is >= PX."),
    max_aspect: float | None = typer.Option(None, metavar="R", help="Keep images whose longer/shorter side is <= R."),
    sources: str | None = typer.Option(None, metavar="A,B", help="Keep only samples of these JSON 'source's."),
    exclude_sources: str | None = typer.Option(None, metavar="A,B", help="Leave out these JSON 'source's."),
    min_caption_chars: int | None = typer.Option(None, metavar="N", help="Keep captions of N+ characters (cleaned)."),
    extra_captions: str | None = typer.Option(None, metavar="FIELDS", help="JSON fields adding captions per image."),
    size_fields: str | None = typer.Option(None, metavar="W,H", help="JSON fields for width,height (else header)."),
    also: str | None = typer.Option(
        None,
        "--also",
        metavar="KINDS",
        help="Also write: imagefolder (OUT/data/metadata.jsonl: Hugging Face imagefolder, diffusers' scripts).",
    ),
    dedup: str | None = typer.Option(
        None,
        "--dedup",
        metavar="FIELD",
        help="Keep only the first sample (shard order, then member order) of each value of this JSON field "
        "(md5_pil_hash, md5_file_hash, sha512_hash...); later ones are 'duplicate' rejects.",
    ),
    webshart: bool | None = typer.Option(
        None, "--webshart", help="Train from the tars: OUT/webshart/<shard>.json indexes, no images written."
    ),
    link: str | None = typer.Option(
        None, "--link", help="Extracted folder: hard (default; copy across file systems), copy, symlink or none."
    ),
    captions_in_place: bool | None = typer.Option(
        None, "--captions-in-place", help="With --link none: write <stem>.txt beside each image in the input folder."
    ),
    unit_samples: int | None = typer.Option(None, metavar="N", help="Extracted folder: samples per unit (10000)."),
    executor: str = typer.Option("local", help="'local' (process pool) or 'ray'."),
    ray_address: str | None = typer.Option(None, help="Ray cluster address (with --executor ray)."),
    restart: bool = typer.Option(
        False,
        "--restart",
        help="Delete previous output in OUT and start over (needed to change a setting that changes the output).",
    ),
    retry_failed: bool = typer.Option(
        False,
        "--retry-failed",
        help="Redo only shards that failed (nothing committed) or were damaged (read error; samples before it kept) "
        "in an earlier run; shards never converted are left for a plain run. A plain re-run skips complete shards, "
        "redoes failed and unfinished ones, and keeps damaged ones unless their input changed.",
    ),
    keep_tars: Path | None = typer.Option(
        None, "--keep-tars", help="With hf:// inputs: also save the downloaded tars here."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress, no summary."),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Read only the JSON and image headers, write nothing (OUT need not exist) and print what a run would "
        "do: samples read, rejected, filtered, duplicates, kept; bytes it would write; kept rows by source and "
        "resolution.",
    ),
    as_json: bool = typer.Option(False, "--json", help="With --dry-run: print one JSON object instead of tables."),
    top: int = typer.Option(10, "--top", min=1, help="With --dry-run: how many sources and resolutions to list."),
) -> None:
    """Convert shards into OUT/dalle3.parquet, OUT/data/<shard>/<image> + .txt captions and OUT/multidatabackend.json.

    Resumable: run the same command again after a crash or Ctrl-C and completed shards are skipped.
    Exit codes: 0 every input shard complete, 1 some shard failed/damaged/not converted, 2 usage error
    (also: settings differ from OUT's, OUT in use by another run), 130 interrupted, 143 stopped by SIGTERM
    (both keep completed shards).
    """
    if executor not in EXECUTORS:
        raise UsageError(f"--executor {executor!r}: unknown executor; use one of: {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:  # in a config file, workers = 0 means all cores
        raise UsageError(f"--workers {workers}: must be at least 1 (leave --workers out to use all cores)")
    _check_dry_run_options(dry_run, as_json, retry_failed, keep_tars)
    settings = load_settings(
        config,
        workers=workers,
        task_bytes=task_bytes,
        caption_field=caption_field,
        caption_fallbacks=csv_list(caption_fallbacks),
        fields=csv_list(fields),
        images=images,
        captions=captions,
        flat=flat,
        max_json_bytes=max_json_bytes,
        min_side=min_side,
        max_aspect=max_aspect,
        sources=csv_list(sources),
        exclude_sources=csv_list(exclude_sources),
        min_caption_chars=min_caption_chars,
        extra_captions=csv_list(extra_captions),
        size_fields=csv_list(size_fields),
        dedup=dedup,
        also=csv_list(also),
        webshart=webshart,
        link=link,
        unit_samples=unit_samples,
        captions_in_place=captions_in_place,
    )
    if executor == "local" and (settings.workers or default_workers()) > 1:
        prestart_workers()  # the pool's imports overlap the driver's (below) and its planning
    from dalle3_etl.run.pipeline import run_convert
    from dalle3_etl.run.preflight import check_out_dir
    from dalle3_etl.run.report import RichReporter

    check_out_dir(out, write=not dry_run)  # before the inputs: a bad OUT is refused without looking at them
    sources = resolve_inputs(
        inputs, keep_dir=keep_tars, unit_samples=settings.unit_samples, skip_txt=settings.captions_in_place, out=out
    )
    if (note := check_folder_inputs(sources, settings.link, out)) and not quiet:
        Console(stderr=True, soft_wrap=True).print(plain(note))
    previous = _stop_on_sigterm()
    try:
        if dry_run:
            raise typer.Exit(_dry_run(sources, out, settings, executor, ray_address, restart, quiet, as_json, top))
        summary = run_convert(
            sources,
            out,
            settings,
            executor=executor,
            ray_address=ray_address,
            restart_run=restart,
            retry_failed=retry_failed,
            reporter=RichReporter(quiet=quiet),
        )
    except Terminated:
        raise typer.Exit(EXIT_TERMINATED) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    raise typer.Exit(summary.exit_code)


def _check_dry_run_options(dry_run: bool, as_json: bool, retry_failed: bool, keep_tars: Path | None) -> None:
    if as_json and not dry_run:
        raise UsageError("--json is for --dry-run (a conversion prints its summary; `stats OUT --json` after it)")
    if dry_run and retry_failed:
        raise UsageError("--dry-run counts every input shard as a fresh conversion would: leave out --retry-failed")
    if dry_run and keep_tars is not None:
        raise UsageError("--dry-run writes nothing: leave out --keep-tars")


def _dry_run(sources, out, settings, executor, ray_address, restart, quiet, as_json, top) -> int:
    """`convert --dry-run`: the funnel as tables (or JSON); the exit code convert would give (1: a shard is
    damaged or failed)."""
    import orjson

    from dalle3_etl.run.dry import dry_run
    from dalle3_etl.run.dryreport import RichDryReporter, print_funnel

    reporter = RichDryReporter(quiet=quiet or as_json)
    funnel = dry_run(
        sources, out, settings, executor=executor, ray_address=ray_address, restart_run=restart, reporter=reporter
    )
    if as_json:
        typer.echo(orjson.dumps(funnel.to_json(top), option=orjson.OPT_INDENT_2).decode())
    else:
        print_funnel(funnel, top, Console())
    return funnel.exit_code


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, systemd, kill): stops the run the way Ctrl-C does."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _stop_on_sigterm():
    """Make SIGTERM stop like Ctrl-C: workers stopped, completed shards kept, a summary line, exit 143.
    Returns the previous handler (None when not in the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)
