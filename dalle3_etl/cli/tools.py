"""Commands around a conversion: `synth` (test corpora), `download` (shards from the Hub, verified), `bench`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from dalle3_etl.cli.core import EXIT_FAILED, command
from dalle3_etl.devtools.bench.config import ALL_MODES as BENCH_MODES
from dalle3_etl.devtools.bench.config import SCRIPTS_DIR as BENCH_SCRIPTS_DIR
from dalle3_etl.errors import EtlError, UsageError
from dalle3_etl.safetext import human_bytes, plain, safe
from dalle3_etl.sources.hub.errors import HubUnavailableError, ShardSelectionError
from dalle3_etl.sources.hub.selection import DEFAULT_REPO, SHARD_DIR, parse_shard_selection


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

    A file this run downloaded that does not match is renamed NAME.corrupt (or NAME.corrupt.N) and reported; a
    file already there is only checked, never replaced or moved.
    Exit code: 0 all verified, 1 any file failed or did not match, 2 usage error (bad --shards, unknown repo,
    revision or shard, a shard's name taken by a file of another size, a folder or a broken link).
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
