"""The `dalle3-etl` command line (typer).

Exit codes: 0 every shard read (rejected samples are not failures), 1 some shard failed or was
damaged, 2 usage error (bad arguments, settings that conflict with an existing output, output
locked), 130 interrupted (Ctrl-C), 143 stopped by SIGTERM.
"""

from __future__ import annotations

import functools
import signal
import threading
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from dalle3_etl.devtools.bench.config import ALL_MODES as BENCH_MODES
from dalle3_etl.devtools.bench.config import SCRIPTS_DIR as BENCH_SCRIPTS_DIR
from dalle3_etl.errors import EtlError, UsageError
from dalle3_etl.executors.pool import EXECUTORS, default_workers, prestart_workers
from dalle3_etl.safetext import human_bytes, plain, safe
from dalle3_etl.settings import load_settings
from dalle3_etl.sources.folder import check_folder_inputs
from dalle3_etl.sources.hub.errors import HubUnavailableError, ShardSelectionError
from dalle3_etl.sources.hub.selection import DEFAULT_REPO, SHARD_DIR, parse_shard_selection
from dalle3_etl.sources.resolve import resolve_inputs

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


def _csv(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


# Over 60 lines: one line per option declaration (typer); the body is about 30 lines.
@command()
def convert(
    inputs: list[str] = typer.Argument(
        ..., help="Shard files, directories, globs, or hf://datasets/<repo>[@rev]/<path>."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (created; resumable)."),
    config: Path | None = typer.Option(None, "--config", help="TOML settings file (see config/default.toml)."),
    workers: int | None = typer.Option(None, "--workers", "-w", help="Worker processes (default: all cores)."),
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
        caption_field=caption_field,
        caption_fallbacks=_csv(caption_fallbacks),
        fields=_csv(fields),
        images=images,
        captions=captions,
        flat=flat,
        max_json_bytes=max_json_bytes,
        min_side=min_side,
        max_aspect=max_aspect,
        sources=_csv(sources),
        exclude_sources=_csv(exclude_sources),
        min_caption_chars=min_caption_chars,
        extra_captions=_csv(extra_captions),
        size_fields=_csv(size_fields),
        dedup=dedup,
        also=_csv(also),
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
        inputs, keep_dir=keep_tars, unit_samples=settings.unit_samples, skip_txt=settings.captions_in_place
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


@command()
def synth(
    out: Path = typer.Argument(..., help="Folder for the generated shards and truth.jsonl."),
    shards: int = typer.Option(2, help="Number of shards."),
    per_shard: int = typer.Option(100, help="Samples per shard."),
    seed: int = typer.Option(0, help="Random seed (same seed, same bytes)."),
    image_bytes: int = typer.Option(24_000, help="Approximate bytes per image."),
    fallback_ratio: float = typer.Option(0.05, help="Share of samples whose caption comes from the fallback chain."),
    no_caption_ratio: float = typer.Option(0.01, help="Share of samples without any usable caption."),
    extracted: bool = typer.Option(False, "--extracted", help="Write the samples as loose files (`tar xf` output)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing."),
    style: str = typer.Option("dalle3", help="dalle3, or img2dataset (00000.tar: .webp + .json + .txt caption)."),
) -> None:
    """Generate a realistic synthetic corpus of DALLE-3-like shards (for tests, demos and benchmarks)."""
    from dalle3_etl.devtools.synth import SynthSpec, write_corpus, write_img2dataset_corpus
    from dalle3_etl.devtools.synth.extracted import write_extracted

    if style not in ("dalle3", "img2dataset"):
        raise UsageError(f"--style {style!r}: use dalle3 or img2dataset")
    spec = SynthSpec(
        shards=shards,
        per_shard=per_shard,
        seed=seed,
        image_bytes=image_bytes,
        fallback_ratio=fallback_ratio,
        no_caption_ratio=no_caption_ratio,
    )
    if extracted and style != "dalle3":
        raise UsageError("synth: --extracted writes the DALLE-3 style only; drop --style or --extracted")
    if style != "dalle3":
        rows = write_img2dataset_corpus(out, shards, per_shard, seed)
    else:
        rows = (write_extracted if extracted else write_corpus)(out, spec)
    if not quiet:
        Console().print(safe(f"wrote {shards} shard(s), {len(rows)} samples, to {out}"))


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


# Over 60 lines: one line per option declaration (typer); the body is a few lines.
@command("entry")
def entry_cmd(
    out: Path = typer.Argument(..., help="An output directory of convert (maybe copied or moved)."),
    mount_path: Path | None = typer.Option(
        None, "--mount-path", metavar="PATH", help="Write the entry for the path OUT will have on the training machine."
    ),
    config: Path | None = typer.Option(None, "--config", help="TOML file whose [simpletuner] table sets values."),
    dataset_id: str | None = typer.Option(None, "--id", help="Dataset id (also names the cache folders)."),
    resolution: float | None = typer.Option(None, help="SimpleTuner resolution."),
    resolution_type: str | None = typer.Option(None, help="area, pixel or pixel_area."),
    minimum_image_size: float | None = typer.Option(None, help="Smaller images are skipped by SimpleTuner."),
    maximum_image_size: float | None = typer.Option(None, help="Larger images are downsampled first."),
    target_downsample_size: float | None = typer.Option(None, help="Size large images are downsampled to."),
    crop: bool | None = typer.Option(None, "--crop/--no-crop", help="Crop to the training resolution."),
    crop_style: str | None = typer.Option(None, help='random, center, corner or face ("" = SimpleTuner\'s).'),
    crop_aspect: str | None = typer.Option(None, help='square, preserve, random or closest ("" = SimpleTuner\'s).'),
    repeats: int | None = typer.Option(None, help="Times SimpleTuner repeats the dataset per epoch (0: not set)."),
    cache_dir_vae: str | None = typer.Option(None, help='VAE cache folder (relative: under OUT; "": default).'),
    cache_dir_text: str | None = typer.Option(None, help="Text-embed cache folder (relative: under OUT)."),
    also: str | None = typer.Option(
        None, "--also", metavar="KINDS", help="Also write: imagefolder (OUT/data/metadata.jsonl, Hugging Face)."
    ),
) -> None:
    """Write OUT/multidatabackend.json again for where OUT is now (after a copy or move) or --mount-path.

    Dataset settings are kept from the present entry unless changed here; OUT's pinned output settings are not
    changed. Exit 2 on a bad setting (the file is left as it was).
    """
    from dalle3_etl.run.portable import rewrite_entry
    from dalle3_etl.store.layout import Layout

    path = rewrite_entry(
        out,
        mount_path=mount_path,
        config=config,
        also=_csv(also) or (),
        id=dataset_id,
        resolution=resolution,
        resolution_type=resolution_type,
        minimum_image_size=minimum_image_size,
        maximum_image_size=maximum_image_size,
        target_downsample_size=target_downsample_size,
        crop=crop,
        crop_style=crop_style,
        crop_aspect=crop_aspect,
        repeats=repeats,
        cache_dir_vae=cache_dir_vae,
        cache_dir_text=cache_dir_text,
    )
    Console().print(safe(f"wrote {path}"))
    if "imagefolder" in (_csv(also) or ()):
        Console().print(safe(f"wrote {Layout(out).imagefolder_metadata}"))


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


def _check_shards(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_shard_selection(value)
        except ShardSelectionError as exc:
            raise typer.BadParameter(str(exc)) from exc
    return value


@command("download")
def download_cmd(
    local_dir: Path = typer.Option(..., "--local-dir", help="Folder to download into (shards land in DIR/data/)."),
    repo: str = typer.Option(DEFAULT_REPO, "--repo", help="Dataset repo on the Hub."),
    revision: str | None = typer.Option(None, "--revision", help="Branch, tag or commit (default: main)."),
    shards: str | None = typer.Option(
        None, "--shards", callback=_check_shards, help="Shard numbers, e.g. 0-9,12 (default: all data/*.tar)."
    ),
    workers: int = typer.Option(4, "--workers", min=1, help="Files downloaded at the same time."),
    reverify: bool = typer.Option(False, "--reverify", help="Hash files again even if verified by an earlier run."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars; print only failures."),
) -> None:
    """Download shards from the Hub and check each one's size and sha256 against the Hub's LFS metadata.

    A file that does not match is renamed NAME.corrupt and reported.
    Exit code: 0 all verified, 1 any file failed or did not match, 2 usage error (bad --shards, unknown repo,
    revision or shard).
    """
    from dalle3_etl.sources.hub.download import download  # imports the Hub client: only when downloading

    try:
        results = download(
            repo, local_dir, revision=revision, shards=shards, workers=workers, progress=not quiet, reverify=reverify
        )
    except HubUnavailableError as exc:  # a usage error for convert (refused before any work); download exits 1
        raise EtlError(str(exc)) from None
    failed = [r for r in results if not r.ok]
    for r in results:
        if r.ok and not quiet:
            note = " (verified earlier)" if r.cached else ""
            digest = f"sha256 {r.sha256}" if r.sha256 else "git blob ok"
            typer.echo(f"ok      {plain(r.filename)}  {human_bytes(r.size or 0)}  {digest}{note}")
        elif not r.ok:
            typer.echo(f"FAILED  {plain(r.error)}", err=True)
    where = Path(local_dir).expanduser().resolve() / SHARD_DIR
    summary = plain(f"{len(results) - len(failed)} of {len(results)} file(s) verified in {where}")
    if failed:
        typer.echo(
            f"{summary}; {len(failed)} failed: {plain(', '.join(r.filename for r in failed))} "
            "(run the same command again to retry them)",
            err=True,
        )
        raise typer.Exit(EXIT_FAILED)
    if not quiet:
        typer.echo(summary)


@command("bench")
def bench_cmd(
    samples: int = typer.Option(200_000, help="Samples in the generated corpus."),
    shards: int = typer.Option(12, help="Shards in the generated corpus."),
    image_bytes: int = typer.Option(4_000, help="Approximate bytes per image."),
    location: Path = typer.Option(Path("/dev/shm"), help="Where the corpus and all outputs go (/dev/shm: no disk)."),
    reps: int = typer.Option(3, help="Repetitions of every mode (alternated within the run)."),
    workers: int = typer.Option(2, "--workers", "-w", help="Worker processes for convert, webdataset and tar."),
    modes: str = typer.Option(",".join(BENCH_MODES), help="Comma-separated modes to run."),
    out: Path = typer.Option(
        Path("benchmarks/results"), "--out", "-o", help="Folder for the JSON result and PNG chart."
    ),
    corpus: Path = typer.Option(None, help="Benchmark these existing shards (*.tar) instead of a generated corpus."),
    keep_corpus: bool = typer.Option(False, help="Keep the generated corpus for the next run."),
    memory_check: bool = typer.Option(
        True, "--memory-check/--no-memory-check", help="Peak RSS at 1x vs 10x shard size and shard count."
    ),
    memory_base: str = typer.Option("2x2000", help="SHARDSxSAMPLES of the 1x memory-check corpus."),
    profile: bool = typer.Option(False, help="Also cProfile one shard conversion, time per stage."),
    scripts_dir: Path = typer.Option(BENCH_SCRIPTS_DIR, help="Folder holding old_recipe/ and wds_baseline.py."),
) -> None:
    """Benchmark convert against the old recipe, a webdataset script and GNU tar (timings, RSS, ratios)."""
    from dalle3_etl.devtools.bench import BenchConfig, run_bench

    try:
        base_shards, base_per = (int(x) for x in memory_base.lower().split("x"))
    except ValueError:
        raise UsageError("--memory-base must look like 2x2000") from None
    cfg = BenchConfig(
        samples=samples,
        shards=shards,
        image_bytes=image_bytes,
        location=location,
        reps=reps,
        workers=workers,
        modes=tuple(m.strip() for m in modes.split(",") if m.strip()),
        out_dir=out,
        corpus=corpus,
        keep_corpus=keep_corpus,
        memory_check=memory_check,
        memory_base=(base_shards, base_per),
        profile=profile,
        scripts_dir=scripts_dir,
    )
    run_bench(cfg)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
