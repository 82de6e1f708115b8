"""`check_folder_inputs`: --link refused with tars; the one note when OUT is on another file system."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dalle3_etl.devtools.synth import SynthSpec, write_corpus
from dalle3_etl.devtools.synth.extracted import write_extracted
from dalle3_etl.sources import folder as folder_mod
from dalle3_etl.sources.base import SourceError
from dalle3_etl.sources.folder import check_folder_inputs
from dalle3_etl.sources.resolve import resolve_inputs

SPEC = SynthSpec(shards=1, per_shard=4, seed=1, image_bytes=300)


def test_link_other_than_hard_is_refused_with_tars_and_fine_with_a_folder(tmp_path):
    write_corpus(tmp_path / "tars", SPEC)
    write_extracted(tmp_path / "ex", SPEC)
    tars = resolve_inputs([str(tmp_path / "tars")])
    with pytest.raises(SourceError, match="--link copy: only for an extracted folder"):
        check_folder_inputs(tars, "copy", tmp_path / "out")
    assert check_folder_inputs(tars, "hard", tmp_path / "out") is None
    units = resolve_inputs([str(tmp_path / "ex")])
    assert check_folder_inputs(units, "copy", tmp_path / "out") is None
    assert check_folder_inputs(units, "hard", tmp_path / "not" / "yet" / "out") is None  # same file system


def test_a_note_once_when_out_is_on_another_file_system(tmp_path, monkeypatch):
    write_extracted(tmp_path / "ex", SPEC)
    units = resolve_inputs([str(tmp_path / "ex")], unit_samples=1)
    assert len(units) == 4
    real_stat = os.stat
    out = tmp_path / "out"
    out.mkdir()

    class Other:
        def __init__(self, st):
            self.st_dev = st.st_dev + 1

    monkeypatch.setattr(
        folder_mod.os, "stat", lambda p, *a, **k: Other(real_stat(p)) if Path(p) == out else real_stat(p)
    )
    note = check_folder_inputs(units, "hard", out)
    assert note.count("note:") == 1 and "copied, not hard-linked" in note and "'" + str(tmp_path / "ex") + "'" in note
