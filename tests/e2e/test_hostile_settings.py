"""Bad settings and unusable output folders get a clear refusal before any work.

Every case runs `convert` through typer's CliRunner and expects exit 2, one line on stderr naming the key (and
the file) or the output folder, no traceback, and no OUT. The inputs given are real shards, except where a test
passes a missing input on purpose: then the refusal must be about the setting or OUT, proving that it came
before the inputs were looked at.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from badinput_helpers import sample, write_shards
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.run import pipeline, preflight
from dalle3_etl.settings import PARQUET_CODECS, Settings, SettingsError, SimpleTunerSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TOML = ROOT / "config" / "default.toml"


@pytest.fixture
def shards(tmp_path) -> list[Path]:
    return write_shards(tmp_path / "in", {"s-1.tar": sample("a") + sample("b"), "s-2.tar": sample("c")})


def _convert(*args: str):
    return CliRunner().invoke(app, ["convert", *map(str, args)])


def _refused(result, *words: str) -> str:
    """Exit 2 with one error line on stderr holding every word, nothing on stdout, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# --- every [convert] and [simpletuner] key, type- and range-checked ------------------------------------

BAD_VALUES = [
    ("convert", "fields", '"url"', "expected a list of non-empty strings"),  # was: one column per character
    ("convert", "fields", '["url", "url"]', "'url' is listed twice"),
    ("convert", "fields", '["caption"]', "'caption': that column is always written"),
    ("convert", "fields", '["url", 3]', "expected a list of non-empty strings"),
    ("convert", "fields", '[""]', "expected a list of non-empty strings"),
    ("convert", "caption_fallbacks", '"long_caption"', "expected a list of non-empty strings"),
    ("convert", "caption_field", '""', "must not be empty"),
    ("convert", "caption_field", "3", "expected a string"),
    ("convert", "images", '"false"', "expected true or false"),  # was: images still copied
    ("convert", "captions", "0", "expected true or false"),
    ("convert", "flat", '"yes"', "expected true or false"),
    ("convert", "workers", "1.5", "expected a whole number"),  # was: taken
    ("convert", "workers", "true", "expected a whole number"),  # a bool is an int in Python: refused
    ("convert", "workers", "-1", "must be at least 0"),
    ("convert", "batch_rows", "0", "must be at least 1"),
    ("convert", "row_group_rows", '"many"', "expected a whole number"),
    ("convert", "compression", '"bogus"', "must be one of none, snappy"),  # was: refused only at the merge
    ("convert", "compression", '"lzo"', "must be one of"),  # a parquet codec pyarrow cannot write
    ("convert", "compression", "false", "expected a string"),
    ("convert", "max_json_bytes", "0", "must be at least 2"),
    ("convert", "max_pending", "0", "must be at least 1"),
    ("convert", "max_dimension", "0", "must be at least 1"),
    ("convert", "max_dimension", "3000000000", "must be at most 2147483647"),
    ("convert", "parquet_name", '"../up.parquet"', "a plain file name ending in .parquet"),
    ("convert", "parquet_name", '"out.csv"', "a plain file name ending in .parquet"),
    ("convert", "caption_feld", '"x"', "unknown setting 'caption_feld'"),
    ("convert", "simpletuner", '{id = "x"}', "put these values in a [simpletuner] table"),
    ("simpletuner", "resolution_type", '"square"', "must be one of area, pixel, pixel_area"),
    ("simpletuner", "resolution", '"1.0"', "expected a number"),
    ("simpletuner", "resolution", "0", "must be more than 0"),
    ("simpletuner", "resolution", "nan", "expected a number"),
    ("simpletuner", "maximum_image_size", "-2.0", "must be more than 0"),
    ("simpletuner", "minimum_image_size", "-0.5", "must be at least 0"),
    ("simpletuner", "target_downsample_size", "true", "expected a number"),
    ("simpletuner", "id", '"../../etc"', "a name usable as a folder name"),  # cache_dir_vae = OUT/cache/vae/<id>
    ("simpletuner", "id", '""', "must not be empty"),
    ("simpletuner", "size", "1", "unknown setting 'size'"),
]


@pytest.mark.parametrize("table, key, value, words", BAD_VALUES, ids=[f"{t}.{k}={v}" for t, k, v, _ in BAD_VALUES])
def test_bad_config_value_is_refused_before_any_work(tmp_path, table, key, value, words):
    config = tmp_path / "bad.toml"
    config.write_text(f"[{table}]\n{key} = {value}\n")
    out = tmp_path / "out"
    line = _refused(_convert(tmp_path / "missing.tar", "-o", out, "--config", config), words, str(config))
    assert key in line and f"[{table}]" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "is a directory, not a TOML file"),
        (b'[convert]\ncaption_field = "caf\xe9"\n', "is not UTF-8 text"),
        (b"[convert\nworkers = 2\n", "invalid TOML"),
        (b"convert = 3\n", "convert must be a [convert] table"),
        (b"[output]\nworkers = 2\n", "unknown table(s) ['output']"),
    ],
)
def test_unusable_config_file_is_refused(tmp_path, content, words):
    config = tmp_path / "c.toml"
    if content is None:
        config.mkdir()
    else:
        config.write_bytes(content)
    out = tmp_path / "out"
    _refused(_convert(tmp_path / "missing.tar", "-o", out, "--config", config), words, str(config))
    assert not out.exists()


def test_missing_config_file_is_refused(tmp_path):
    _refused(
        _convert(tmp_path / "missing.tar", "-o", tmp_path / "out", "--config", tmp_path / "no.toml"),
        "config file not found",
        "no.toml",
    )
    assert not (tmp_path / "out").exists()


# --- flags --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, value, words",
    [
        ("--fields", "url,url", "--fields url,url: 'url' is listed twice"),
        ("--fields", "url,caption", "--fields url,caption: 'caption': that column is always written"),
        ("--fields", "width", "'width': that column is always written"),
        ("--workers", "-1", "--workers -1: must be at least 1"),
        ("--workers", "0", "--workers 0: must be at least 1 (leave --workers out to use all cores)"),
        ("--max-json-bytes", "0", "--max-json-bytes 0: must be at least 2"),
        ("--caption-field", "", '--caption-field "": must not be empty'),
    ],
)
def test_bad_flag_is_refused_before_any_work(tmp_path, flag, value, words):
    out = tmp_path / "out"
    _refused(_convert(tmp_path / "missing.tar", "-o", out, flag, value), words)
    assert not out.exists()


def test_flag_errors_name_the_flag_even_when_a_config_file_is_given(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[convert]\nmax_json_bytes = 4096\n")
    line = _refused(
        _convert(tmp_path / "missing.tar", "-o", tmp_path / "out", "--config", config, "--max-json-bytes", "1"),
        "--max-json-bytes 1",
    )
    assert str(config) not in line


def test_repeated_caption_fallbacks_are_de_duplicated():
    """Trying a field twice cannot change which caption wins: the repeat is dropped, in order, not refused."""
    s = load_settings(None, caption_fallbacks=("long_caption", "original_prompt", "long_caption"))
    assert s.caption_fallbacks == ("long_caption", "original_prompt")
    assert (
        s.output_fingerprint()
        == load_settings(None, caption_fallbacks=("long_caption", "original_prompt")).output_fingerprint()
    )


def test_settings_built_in_code_are_checked_and_normalised():
    with pytest.raises(SettingsError, match="workers = true: expected a whole number"):
        Settings(workers=True)
    with pytest.raises(SettingsError, match="resolution_type"):
        SimpleTunerSettings(resolution_type="square")
    s = Settings(fields=["url"], compression="ZSTD", simpletuner=SimpleTunerSettings(resolution=1))
    assert (s.fields, s.compression, s.simpletuner.resolution) == (("url",), "zstd", 1.0)
    assert isinstance(s.simpletuner.resolution, float)


def test_parquet_codecs_are_exactly_what_pyarrow_writes(tmp_path):
    """PARQUET_CODECS is a fixed list (no pyarrow import to check a setting): keep it true to pyarrow."""
    table = pa.table({"a": [1, 2]})
    for codec in PARQUET_CODECS:
        pq.write_table(table, tmp_path / f"{codec}.parquet", compression=codec)
        assert pq.read_table(tmp_path / f"{codec}.parquet").equals(table)
        assert load_settings(None, compression=codec.upper()).compression == codec
    for codec in ("uncompressed", "lzo", "bz2", "zstd9"):
        with pytest.raises((pa.ArrowException, OSError, ValueError)):
            pq.write_table(table, tmp_path / "x.parquet", compression=codec)
        with pytest.raises(SettingsError, match="must be one of"):
            load_settings(None, compression=codec)


# --- OUT ----------------------------------------------------------------------------------------------


def test_out_under_a_regular_file_is_refused(tmp_path, shards):
    (tmp_path / "somefile").write_text("mine")
    _refused(
        _convert(tmp_path / "missing.tar", "-o", tmp_path / "somefile" / "out"),
        f"{tmp_path / 'somefile'} is a file, not a directory",
    )
    assert (tmp_path / "somefile").read_text() == "mine"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs a mounted /proc")
def test_out_in_proc_is_refused(shards):
    _refused(_convert(*shards, "-o", "/proc/dalle3-etl-out"), "output /proc/dalle3-etl-out cannot be")
    assert not os.path.exists("/proc/dalle3-etl-out")


def test_out_in_a_folder_without_write_permission_is_refused_through_access(tmp_path, monkeypatch):
    """The permission check asks os.access (which also says no on a read-only filesystem, even to root).
    Here os.access is made to say no for one folder; the real permission case is the next test."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(preflight.os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    _refused(_convert(tmp_path / "missing.tar", "-o", locked / "new" / "out"), f"no write permission in {locked}")
    assert list(locked.iterdir()) == []


def test_out_in_a_read_only_folder_is_refused(tmp_path, shards):
    if os.geteuid() == 0:
        pytest.skip(
            "running as root: root can create folders in a mode-555 folder, so there is nothing to refuse "
            "(a read-only mount would be, but tests cannot mount one)"
        )
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        _refused(_convert(*shards, "-o", parent / "out"), f"no write permission in {parent}")
        assert not (parent / "out").exists()
    finally:
        parent.chmod(0o755)


def test_run_convert_refuses_an_out_it_cannot_create(tmp_path, shards, monkeypatch):
    """What only mkdir can tell (a pseudo filesystem, a race) is a StateError, not a traceback."""
    from dalle3_etl.sources.resolve import resolve_inputs
    from dalle3_etl.store.layout import StateError

    def no_mkdir(self, *args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(Path, "mkdir", no_mkdir)
    with pytest.raises(StateError, match="cannot be created: Operation not permitted"):
        pipeline.run_convert(resolve_inputs([str(p) for p in shards]), tmp_path / "out", Settings(workers=1))


# --- good settings still work, with the same bytes -------------------------------------------------------


def _digest(out: Path) -> dict[str, str]:
    """Every output file but the dataloader config (it names OUT's absolute path) and the run state."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".dalle3-etl" not in p.parts and p.name != "multidatabackend.json"
    }


def test_default_config_converts_to_the_same_bytes_as_no_config(tmp_path, shards):
    plain, configured = tmp_path / "plain", tmp_path / "configured"
    result = _convert(*shards, "-o", plain, "--workers", "1")
    assert result.exit_code == 0, result.output
    result = _convert(*shards, "-o", configured, "--workers", "1", "--config", DEFAULT_TOML)
    assert result.exit_code == 0, result.output
    digest = _digest(plain)
    assert {"dalle3.parquet", "data/s-1/a.jpg", "data/s-1/a.txt", "data/s-2/c.txt"} <= set(digest)
    assert _digest(configured) == digest
    assert pq.read_table(plain / "dalle3.parquet").column("filename").to_pylist() == [
        "s-1/a.jpg",
        "s-1/b.jpg",
        "s-2/c.jpg",
    ]


def test_every_default_key_with_another_good_value_is_taken(tmp_path, shards):
    config = tmp_path / "c.toml"
    config.write_text(
        '[convert]\ncaption_field = "long_caption"\ncaption_fallbacks = ["short_caption"]\nfields = ["url"]\n'
        "images = false\ncaptions = false\nflat = true\nworkers = 1\nbatch_rows = 1\nrow_group_rows = 2\n"
        'compression = "GZIP"\nmax_json_bytes = 4096\nmax_pending = 5\nmax_dimension = 4096\n'
        'parquet_name = "mine.parquet"\n'
        '[simpletuner]\nid = "my-set"\nresolution = 1024\nmaximum_image_size = 1536\nminimum_image_size = 0\n'
        'target_downsample_size = 1280\nresolution_type = "pixel"\n'
    )
    out = tmp_path / "out"
    result = _convert(*shards, "-o", out, "--config", config)
    assert result.exit_code == 0, result.output
    pf = pq.ParquetFile(out / "mine.parquet")
    assert pf.metadata.num_rows == 3 and "url" in pf.schema_arrow.names
    assert pf.metadata.row_group(0).column(0).compression == "GZIP"
    assert not list((out / "data").rglob("*.jpg")) and not list((out / "data").rglob("*.txt"))
    entry = json.loads((out / "multidatabackend.json").read_text())[0]
    assert (entry["id"], entry["resolution"], entry["resolution_type"]) == ("my-set", 1024.0, "pixel")


def test_real_subprocess_prints_one_line_for_a_bad_config(tmp_path):
    """Outside CliRunner too: stderr is the one line, exit 2."""
    config = tmp_path / "c.toml"
    config.write_text('[convert]\ncompression = "bogus"\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dalle3_etl",
            "convert",
            str(tmp_path / "x.tar"),
            "-o",
            str(tmp_path / "out"),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (
        f'error: {config}: [convert] compression = "bogus": must be one of {", ".join(PARQUET_CODECS)}'
    )
    assert not (tmp_path / "out").exists()
