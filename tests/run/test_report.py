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
