"""`convert --dry-run` (run.dry, shard.dry): the funnel equals what a real run then does, and nothing is written.

Every comparison runs the dry run first, then a real conversion of the same inputs with the same settings, and
compares each count with what the real run left: rows in the parquet (by source, by resolution), reasons in
rejects.jsonl, the summary's notes, and the bytes of the files under OUT/data."""

from __future__ import annotations

import io
import os
from collections import Counter
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from badinput_helpers import IMAGE_SUFFIXES, img, js, member_offsets, sample, snapshot, source, tar_bytes, write_shards
from rich.console import Console

from dalle3_etl.executors.local import InlineExecutor
from dalle3_etl.run import dry as run_dry
from dalle3_etl.run import preflight
from dalle3_etl.run.dry import Funnel, dry_run
from dalle3_etl.run.dryreport import print_funnel
from dalle3_etl.run.pipeline import run_convert
from dalle3_etl.settings import Settings
from dalle3_etl.shard.rows import Reason
from dalle3_etl.sources.resolve import resolve_inputs
from dalle3_etl.store.layout import Layout, StateError
from dalle3_etl.store.locks import RunLock


def counts_of_dry(funnel: Funnel) -> dict:
    return {
        "kept": funnel.kept,
        "rejects": dict(funnel.rejects),
        "notes": dict(funnel.notes),
        "image_bytes": funnel.image_bytes,
        "caption_bytes": funnel.caption_bytes,
        "sources": dict(funnel.sources),
        "resolutions": dict(funnel.resolutions),
    }


def counts_of_real(out: Path, summary) -> dict:
    rows = pq.read_table(out / "dalle3.parquet").to_pylist()
    lines = (out / "rejects.jsonl").read_bytes().splitlines()
    notes: Counter[str] = Counter()
    for result in summary.results:
        notes.update(result.notes)
    sizes = {"image": 0, "caption": 0}
    for dirpath, _dirs, files in os.walk(out / "data"):
        for name in files:
            kind = "image" if Path(name).suffix.lower() in IMAGE_SUFFIXES else "caption"
            sizes[kind] += os.path.getsize(os.path.join(dirpath, name))
    return {
        "kept": len(rows),
        "rejects": dict(Counter(orjson.loads(line)["reason"] for line in lines)),
        "notes": dict(notes),
        "image_bytes": sizes["image"],
        "caption_bytes": sizes["caption"],
        "sources": dict(Counter("(none)" if r["source"] is None else r["source"] for r in rows)),
        "resolutions": dict(Counter(f"{r['width']}x{r['height']}" for r in rows)),
    }


def dry_then_real(sources, out: Path, dry_workers: int = 2, **settings) -> tuple[Funnel, dict, dict]:
    """The dry run (nothing may appear at OUT), then the real run; (funnel, dry counts, real counts)."""
    funnel = dry_run(sources, out, Settings(workers=dry_workers, **settings))
    assert not out.exists()
    summary = run_convert(sources, out, Settings(workers=1, **settings))
    assert funnel.exit_code == summary.exit_code
    return funnel, counts_of_dry(funnel), counts_of_real(out, summary)


@pytest.mark.parametrize(
    "settings",
    [{}, {"images": False}, {"captions": False}, {"images": False, "captions": False}, {"flat": True}],
    ids=["default", "no-images", "no-captions", "parquet-only", "flat"],
)
def test_the_funnel_equals_what_the_real_run_then_does(corpus, tmp_path, settings):
    root, truth = corpus
    funnel, dry, real = dry_then_real(resolve_inputs([str(root)]), tmp_path / "out", **settings)
    assert dry == real
    assert funnel.kept == sum(1 for t in truth if t.caption is not None)
    assert funnel.read == len(truth)
    assert funnel.rejects == {Reason.NO_CAPTION: len(truth) - funnel.kept}
    assert (funnel.image_bytes > 0) == settings.get("images", True)
    assert (funnel.caption_bytes > 0) == settings.get("captions", True)


def hostile_shards(root: Path) -> list[Path]:
    """Every per-sample decision of the writer, and a shard damaged half-way."""
    deep = "/".join(["d" * 18] * 212) + "/k"  # short folders, but a path too long under OUT's staging folder
    s1 = [
        *sample("ok1"),
        *sample("nosize", width=..., height=...),  # size from the header
        *sample("badsize", width="wide"),  # json_size_invalid: the header's size is used
        ("nocap.jpg", img()),
        ("nocap.json", js(caption="   ")),
        ("notjson.jpg", img()),
        ("notjson.json", b"{nope"),
        ("array.jpg", img()),
        ("array.json", b"[1, 2]"),
        ("html.jpg", b"<html>not found</html>"),
        ("html.json", js()),
        ("lonely.jpg", img()),
        ("alone.json", js()),
        ("../escape.jpg", img()),
        ("../escape.json", js()),
        ("twice.jpg", img()),
        ("twice.json", js()),
        ("twice.JPG", img()),
        *sample("a"),
        ("a.jpg/b.jpg", img()),  # a folder where a's image is
        ("a.jpg/b.json", js()),
        ("a.txt/e.jpg", img()),  # a folder where a's caption file is
        ("a.txt/e.json", js()),
        ("x" * 300 + ".jpg", img()),  # a name too long for the file system
        ("x" * 300 + ".json", js()),
        (f"{deep}.jpg", img()),
        (f"{deep}.json", js()),
        ("notes.md", b"hello"),
        *sample("z"),
    ]
    s2 = tar_bytes([*sample("b1"), *sample("b2"), *sample("b3")])
    cut = member_offsets(s2)["b3.jpg"][1] + 100
    return write_shards(root, {"s1.tar": tar_bytes(s1), "s2.tar": s2[:cut]})


@pytest.mark.parametrize("mode", ["file", "stream"])
def test_bad_samples_and_damage_are_decided_as_the_real_run_decides_them(tmp_path, mode):
    paths = hostile_shards(tmp_path / "in")
    dry_sources = [source(p, mode) for p in paths]
    funnel = dry_run(dry_sources, tmp_path / "out", Settings(workers=1))
    assert not (tmp_path / "out").exists()
    summary = run_convert([source(p) for p in paths], tmp_path / "out", Settings(workers=1))
    assert counts_of_dry(funnel) == counts_of_real(tmp_path / "out", summary)
    # the cases did happen (the comparison alone would hold if both ran past them)
    for reason, n in {
        Reason.NAME_CLASH: 2,
        Reason.NAME_UNUSABLE: 2,
        Reason.DUPLICATE_MEMBER: 1,
        Reason.UNSAFE_MEMBER: 2,  # one line for each member
        Reason.IMAGE_INVALID: 1,
        Reason.NO_CAPTION: 1,
        Reason.SHARD_UNREADABLE: 1,
        Reason.JSON_INVALID: 1,
        Reason.JSON_NOT_OBJECT: 1,
        Reason.IMAGE_WITHOUT_JSON: 1,
        Reason.JSON_WITHOUT_IMAGE: 1,
    }.items():
        assert funnel.rejects[reason] == n, reason
    assert funnel.notes["size_from_header"] == 2 and funnel.notes["json_size_invalid"] == 1
    assert list(funnel.damaged) == ["s2"] and funnel.exit_code == 1 and not funnel.failed


def test_flat_names_go_to_the_first_shard_whatever_order_the_shards_finish_in(tmp_path, monkeypatch):
    paths = write_shards(
        tmp_path / "in",
        {
            "data-1.tar": [*sample("a"), *sample("b"), *sample("dir/c")],
            "data-2.tar": [*sample("a", ext="png"), *sample("dir"), *sample("new")],  # a.txt taken; dir.jpg free
            "data-10.tar": [*sample("b"), ("dir/c.jpg/d.jpg", img()), ("dir/c.jpg/d.json", js()), *sample("x")],
        },
    )

    class Backwards(InlineExecutor):  # the last shard in shard order finishes first
        def run(self, tasks, on_progress, on_result):
            super().run(tasks[::-1], on_progress, on_result)

    monkeypatch.setattr(run_dry, "make_executor", lambda *args: Backwards())
    sources = resolve_inputs([str(p) for p in paths])
    funnel, dry, real = dry_then_real(sources, tmp_path / "out", flat=True)
    assert dry == real
    assert funnel.rejects == {Reason.NAME_CLASH: 3} and funnel.kept == 6


def test_nothing_is_written_and_an_existing_output_is_neither_changed_nor_locked(corpus, converted_copy, tmp_path):
    root, truth = corpus
    out, _ = converted_copy
    with RunLock(Layout(out).lock, Layout(out).workers_lock):  # a run in progress on OUT
        before = snapshot(tmp_path)
        funnel = dry_run(resolve_inputs([str(root)]), out, Settings(workers=2))
        missing = dry_run(resolve_inputs([str(root)]), tmp_path / "new" / "out", Settings(workers=2))
        assert snapshot(tmp_path) == before
    assert funnel.complete == 3 and missing.complete == 0  # a real run would skip the three shards
    assert funnel.kept == missing.kept == sum(1 for t in truth if t.caption is not None)


def test_an_output_that_cannot_be_written_is_fine_since_nothing_is(corpus, tmp_path, monkeypatch):
    root, _ = corpus
    sources = resolve_inputs([str(root)])
    monkeypatch.setattr(preflight.os, "access", lambda path, mode: False)  # a read-only disk, for any user
    with pytest.raises(StateError, match="cannot be written"):
        run_convert(sources, tmp_path / "out", Settings(workers=1))
    funnel = dry_run(sources, tmp_path / "out", Settings(workers=1))
    assert funnel.kept > 0 and funnel.exit_code == 0


def test_the_refusals_of_convert_come_first(corpus, converted_copy, tmp_path):
    root, _ = corpus
    out, _ = converted_copy
    sources = resolve_inputs([str(root)])
    with pytest.raises(StateError, match="caption_field"):  # OUT was made with other settings
        dry_run(sources, out, Settings(caption_field="long_caption"))
    restarted = dry_run(sources, out, Settings(workers=1, caption_field="long_caption"), restart_run=True)
    assert restarted.complete == 0 and restarted.kept > 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(StateError, match="not empty"):
        dry_run(sources, tmp_path / "mine", Settings())
    (tmp_path / "file").write_text("x")
    with pytest.raises(StateError, match="not a directory"):
        dry_run(sources, tmp_path / "file", Settings())


def test_the_funnel_shows_every_reason_and_filter_it_is_given():
    funnel = Funnel(out=Path("/o"), shards=2, kept=90)
    funnel.rejects.update({"no_caption": 3, "filtered": 5, "duplicate": 2, "a_reason_added_later": 1})
    funnel.notes.update({"filtered_min_side": 4, "filtered_sources": 1, "size_from_header": 7})
    data = funnel.to_json(10)["samples"]
    assert data == {
        "read": 101,
        "rejected": {"a_reason_added_later": 1, "no_caption": 3},
        "filtered": 5,
        "filtered_by": {"min_side": 4, "sources": 1},
        "duplicates": 2,
        "kept": 90,
    }
    text = io.StringIO()
    print_funnel(funnel, 10, Console(file=text, width=100))
    lines = [" ".join(line.split()) for line in text.getvalue().splitlines()]
    for line in (
        "samples read 101",
        "rejected: a_reason_added_later 1",
        "rejected: no_caption 3",
        "filtered 5",
        "by min_side 4",
        "by sources 1",
        "duplicates 2",
        "kept (rows in the parquet) 90",
        "note: size from header 7",
    ):
        assert line in lines, (line, lines)


def test_untrusted_sources_are_shown_as_text_on_a_terminal_and_off_it():
    funnel = Funnel(out=Path("/o"), shards=1, kept=2)
    funnel.sources.update({"[bold red]evil[/] :fire: \x1b[2J": 1, "plain": 1})
    funnel.resolutions.update({"64x48": 2})
    for terminal in (True, False):
        text = io.StringIO()
        print_funnel(funnel, 10, Console(file=text, width=120, force_terminal=terminal, color_system=None))
        shown = text.getvalue()
        assert "[bold red]evil[/] :fire: \\x1b[2J" in shown and "\x1b" not in shown
        assert ("┃" in shown or "│" in shown) == terminal  # a rich table on a terminal, plain text otherwise


def test_the_ray_executor_gives_the_same_funnel(corpus, tmp_path):
    ray = pytest.importorskip("ray")
    root, _ = corpus
    sources = resolve_inputs([str(root)])
    local = dry_run(sources, tmp_path / "out", Settings(workers=1, flat=True))
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=128 << 20)
    try:
        remote = dry_run(sources, tmp_path / "out", Settings(workers=2, flat=True), executor="ray")
    finally:
        ray.shutdown()
    assert counts_of_dry(remote) == counts_of_dry(local) and remote.kept > 0
    assert not (tmp_path / "out").exists()


def _shaped_sample(key: str, md5: str | None, w: int = 1024, source: str = "dalle3") -> list:
    fields = {"width": w, "height": 1024, "source": source, "long_caption": f"a long caption of {key}"}
    if md5 is not None:
        fields["md5_pil_hash"] = md5
    return [(f"{key}.jpg", img()), (f"{key}.json", js(caption=f"caption {key}", **fields))]


SHAPING = {
    "dedup": "md5_pil_hash",
    "min_side": 1000,
    "exclude_sources": ("midjourney",),
    "extra_captions": ("long_caption",),
}


def _shaped_shards(root: Path) -> list[Path]:
    s = _shaped_sample
    shards = {
        "data-000000.tar": s("a", "h1") + s("b", "h2") + s("c", "h1") + s("d", None) + s("e", "h3", w=600),
        "data-000001.tar": s("f", "h2") + s("g", "h4") + s("h", "h4", source="midjourney") + s("i", "h5"),
    }
    return write_shards(root, {name: tar_bytes(members) for name, members in shards.items()})


def test_the_funnel_with_filters_dedup_and_extra_captions_equals_the_real_run(tmp_path):
    """Everything the issue shapes at once: duplicates within and across shards (a repeat of an earlier shard's
    hash), a sample without the hash, filters, extra captions: the dry run counts what the real run then does."""
    sources = resolve_inputs([str(p) for p in _shaped_shards(tmp_path / "in")])
    funnel, dry, real = dry_then_real(sources, tmp_path / "out", **SHAPING)
    assert dry == real
    # c repeats a within its shard, f repeats b across shards; e is too small and h's source is excluded (a
    # filter comes first, so h never takes g's hash)
    assert funnel.rejects == {"duplicate": 2, "filtered": 2}
    assert funnel.kept == 5  # a, b, d (no hash: kept), g, i


def test_the_summary_counts_the_captions_of_the_rows_kept_after_dedup(tmp_path):
    """The captions SimpleTuner will embed are those of the parquet's rows: a duplicate across shards, dropped
    at merge time after its worker counted its captions, is not among them."""
    from dalle3_etl.run.report import captions_to_embed

    sources = resolve_inputs([str(p) for p in _shaped_shards(tmp_path / "in")])
    summary = run_convert(sources, tmp_path / "out", Settings(workers=1, **SHAPING))
    assert summary.rows == 5
    assert captions_to_embed(summary) == 10  # a, b, d, g, i: a caption and a long caption each
