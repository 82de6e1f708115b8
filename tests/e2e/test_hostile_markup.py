"""Untrusted text is never markup: hostile shard, member, path and caption text printed by every command.

Rich parses `[...]` in strings as markup: `x[/]y.jpg` crashes the print (MarkupError), `data-[red]1` loses its
brackets and colours the rest of the line. Terminal control characters (ESC, BEL, C1 CSI) in a name would be sent
to the terminal as they are. Every command must print such text literally, with controls made visible.
"""

from __future__ import annotations

import io
import os
from types import SimpleNamespace

import pytest
from badinput_helpers import img, js, member_offsets, tar_bytes
from rich.console import Console
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.run import report
from dalle3_etl.safetext import plain, safe
from dalle3_etl.shard.convert import ShardResult

WIDE = {"COLUMNS": "400"}  # one table row per line, whatever the length of the tmp path
ESC_SHARD = "data-3"  # its member keys hold an escape sequence and markup (a shard NAME with one is refused)
CONTROLS = ("\x1b", "\x07", "\x9b", "\r")


def _run(*args: str):
    return CliRunner().invoke(app, list(args), env=WIDE)


def _squash(text: str) -> str:
    return "".join(text.split())


def _no_crash(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "MarkupError" not in result.output
    for c in CONTROLS:
        assert c not in result.output, f"{c!r} reached the terminal"
    return result.output


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Three shards converted into an OUT named `o[bold]`: `data-[red]1` damaged inside member `x[/]y.jpg`,
    `data-2` with a source `[/red]src` and a caption holding ESC and BEL, and a shard whose name holds ESC."""
    root = tmp_path_factory.mktemp("hostile")
    shards = root / "in"
    shards.mkdir()
    data = tar_bytes(
        [("a.jpg", img()), ("a.json", js(source="[/red]src")), ("x[/]y.jpg", img(nbytes=4000)), ("x[/]y.json", js())]
    )
    (shards / "data-[red]1.tar").write_bytes(data[: member_offsets(data)["x[/]y.jpg"][1] + 1000])
    (shards / "data-2.tar").write_bytes(tar_bytes([("b.jpg", img()), ("b.json", js("fox \x1b[31mred\x07 bell"))]))
    (shards / f"{ESC_SHARD}.tar").write_bytes(
        tar_bytes([("c.jpg", img()), ("c.json", js()), ("d\x1b[31m.jpg", img()), ("d\x1b[31m.json", js())])
    )
    out = root / "o[bold]"
    result = _run("convert", str(shards), "-o", str(out), "--workers", "1")
    return out, result


def test_convert_prints_hostile_names_literally(hostile):
    out, result = hostile
    text = _no_crash(result, 1)  # 1: a shard is damaged
    assert "DAMAGED data-[red]1: " in text and "'x[/]y.jpg'" in text
    assert "could not be read completely (samples before the damage are kept): data-[red]1." in text
    assert f"SimpleTuner-ready output in {out}:" in text and f"parquet:    {out / 'dalle3.parquet'}" in text
    assert (out / "dalle3.parquet").is_file()  # the merge ran: the DAMAGED line did not stop the run


def test_status_prints_hostile_details_literally(hostile):
    out, _ = hostile
    text = _no_crash(_run("status", str(out)), 0)
    assert f"dalle3-etl status: {out}" in text
    assert "data-[red]1" in text and "'x[/]y.jpg'" in text and "damaged" in text
    assert "data-3" in text and "done 2, damaged 1" in text


def test_head_prints_hostile_cells_literally(hostile):
    out, _ = hostile
    text = _no_crash(_run("head", str(out)), 0)
    assert str(out / "dalle3.parquet") in text
    assert "data-[red]1/a.jpg" in text and "[/red]src" in text
    assert "fox [31mred bell" in text  # control characters are removed from captions at conversion
    assert "data-3/c.jpg" in text


def test_stats_prints_hostile_sources_and_shards_literally(hostile):
    out, _ = hostile
    text = _no_crash(_run("stats", str(out)), 0)
    assert _squash(f"dalle3-etl stats: {out}") in _squash(text)  # the title wraps to the width of the table
    assert "data-[red]1" in text and "[/red]src" in text and "data-3" in text


def test_verify_prints_hostile_examples_literally(hostile, tmp_path):
    out, _ = hostile
    text = _no_crash(_run("verify", str(out)), 0)
    assert f"dalle3-etl verify: {out}" in text
    stray = out / "data" / "data-2" / "[bold]z\x1b[2J.jpg"  # an image without a row: a verify example
    stray.write_bytes(img())
    try:
        text = _no_crash(_run("verify", str(out)), 1)
    finally:
        stray.unlink()
    assert "image_without_row" in text and "data-2/[bold]z\\x1b[2J.jpg" in text


def test_usage_errors_print_hostile_paths_literally(tmp_path):
    text = _no_crash(_run("status", str(tmp_path / "[/]x\x1b[2J")), 2)
    assert "[/]x\\x1b[2J is not a dalle3-etl output directory" in " ".join(text.split())


def test_failed_and_damaged_lines_print_names_literally():
    buf = io.StringIO()
    reporter = report.RichReporter(console=Console(file=buf, width=400, force_terminal=False))
    reporter.shard_done(ShardResult("s[/]1", ok=False, failure="OSError: [Errno 28] no space: 'x[/]y\x1b[2J.jpg'"))
    reporter.shard_done(ShardResult("s[red]2", ok=True, samples=3, error="truncated inside member ':fire: [/b]'"))
    assert buf.getvalue().splitlines() == [
        "FAILED s[/]1: OSError: [Errno 28] no space: 'x[/]y\\x1b[2J.jpg'",
        "DAMAGED s[red]2: truncated inside member ':fire: [/b]' (3 samples before the damage were kept)",
    ]


def test_download_progress_prints_hub_file_names_literally():
    from dalle3_etl.sources.hub.progress import DownloadTracker

    names = ["data/x[red]y.tar", "data/:fire:[bold].tar", "data/b\x1b]0;owned\x07.tar"]
    files = [SimpleNamespace(path=n, size=10, lfs=None) for n in names]
    tracker = DownloadTracker(True, files, Console(file=io.StringIO()))
    for n in names[:2]:
        tracker.downloaded(n, 4)
    tracker.hashing(names[2])
    buf = io.StringIO()
    Console(file=buf, width=200).print(tracker.progress.get_renderable())
    text = buf.getvalue()
    assert "downloading x[red]y.tar" in text and "downloading :fire:[bold].tar" in text
    assert "verifying b\\x1b]0;owned\\x07.tar" in text and "\x1b" not in text and "\x07" not in text


def test_bench_error_prints_hostile_path_literally(tmp_path):
    empty = tmp_path / "x[" / "]corpus"  # the path reads x[/]corpus: a closing tag with nothing to close
    empty.mkdir(parents=True)
    result = _run(
        "bench",
        "--corpus",
        str(empty),
        "--location",
        str(tmp_path),
        "--out",
        str(tmp_path / "res"),
        "--no-memory-check",
        "--reps",
        "1",
    )
    text = _no_crash(result, 1)
    assert f"no .tar shards in {empty}" in text


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("a\x1b[31mb", "a\\x1b[31mb"),  # ESC
        ("bell\x07", "bell\\x07"),
        ("csi\x9b2J", "csi\\x9b2J"),  # C1 CSI: an escape sequence in one character
        ("over\rwrite", "over\\x0dwrite"),
        ("del\x7f", "del\\x7f"),
        ("nul\x00", "nul\\x00"),
        (os.fsdecode(b"latin-\xe9.tar"), "latin-\\xe9.tar"),  # not UTF-8: would fail to print
        ("tab\tand\nnewline", "tab\tand\nnewline"),  # layout characters are kept
        ("[bold]é ✓ :fire:", "[bold]é ✓ :fire:"),  # markup is plain text here; printable Unicode untouched
    ],
)
def test_plain_makes_controls_visible(raw, shown):
    assert plain(raw) == shown
    assert safe(raw).plain == shown
    buf = io.StringIO()
    Console(file=buf, width=200).print(safe(raw))
    assert buf.getvalue() == shown.expandtabs() + "\n"  # rich expands tabs, as a terminal would
