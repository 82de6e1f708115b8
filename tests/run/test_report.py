"""What the user sees: plain progress lines when not on a terminal, and the summary table."""

from __future__ import annotations

import io

from rich.console import Console

from dalle3_etl.run import report
from dalle3_etl.run.pipeline import run_convert
from dalle3_etl.settings import Settings
from dalle3_etl.shard import convert as shard
from dalle3_etl.sources.resolve import resolve_inputs


def test_plain_progress_lines_and_summary_when_output_is_not_a_terminal(corpus, tmp_path, monkeypatch):
    root, truth = corpus
    monkeypatch.setattr(report, "LOG_EVERY", 0.0)
    monkeypatch.setattr(shard, "PROGRESS_EVERY", 0.0)
    buf = io.StringIO()
    reporter = report.RichReporter(console=Console(file=buf, width=120, force_terminal=False))
    for workers in (1, 2):
        out = tmp_path / f"o{workers}"
        summary = run_convert(resolve_inputs([str(root)]), out, Settings(workers=workers), reporter=reporter)
        text = buf.getvalue()
        assert "progress: shards" in text and "samples/s" in text
        assert "rows in parquet" in text and f"{summary.rows:,}" in text
        assert "rejected: no_caption" in text
        assert str(out / "multidatabackend.json") in text
        buf.truncate(0)


def test_quiet_prints_nothing(corpus, tmp_path):
    root, _ = corpus
    buf = io.StringIO()
    reporter = report.RichReporter(console=Console(file=buf), quiet=True)
    run_convert(resolve_inputs([str(root)]), tmp_path / "o", Settings(workers=1), reporter=reporter)
    assert buf.getvalue() == ""


def test_the_scans_of_hub_shards_show_how_far_they_read(monkeypatch):
    from dalle3_etl.run.plan import Plan
    from dalle3_etl.sources.hub.stream import HubShardSource

    src = HubShardSource("data-000000", "hf://x/data/data-000000.tar", 2_000_000, {}, path_in_repo="data/x.tar")
    monkeypatch.setattr(report, "LOG_EVERY", 0.0)
    buf = io.StringIO()
    plain_reporter = report.RichReporter(console=Console(file=buf, width=120, force_terminal=False))
    plain_reporter.scanning([src])
    plain_reporter.scan_progress("data-000000", 1_000_000)
    plain_reporter.scan_progress("data-000000", 2_000_000)
    text = buf.getvalue()
    assert "1 of them from the Hub (read in full)" in text
    assert "finding split points: 1.00 MB/2.00 MB (50.0%)" in text and "(100.0%)" in text

    buf = io.StringIO()
    live = report.RichReporter(console=Console(file=buf, width=120, force_terminal=True, color_system=None))
    live.scanning([src])
    scan_bar = live.bar
    assert scan_bar is not None  # a bar while the scans read
    live.scan_progress("data-000000", 2_000_000)
    live.start(Plan(todo=[src], skipped=[], why={}), src.size)
    assert "finding split points" in buf.getvalue()
    assert live.bar is not None and live.bar is not scan_bar  # the conversion's own bar follows it
    assert "Converting 1 shard(s), 2.00 MB." in buf.getvalue()
    live._stop()
