"""A write failure (disk full, file too large) fails the shard with the OS error, leaves nothing half-written,
keeps the run resumable, and a re-run after the cause is removed gives the output of a clean run.

Three ways to make writes fail: a real full filesystem (a tiny tmpfs, in a private mount namespace; needs
root, skipped otherwise), a file-size limit (RLIMIT_FSIZE with SIGXFSZ ignored: writes fail with EFBIG; any
Linux), and an injected ENOSPC at each kind of write in an in-process run (image, caption, parquet part,
staged stream body)."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from badinput_helpers import check_output, img, js, source, write_shards

from dalle3_etl.run.pipeline import run_convert
from dalle3_etl.settings import Settings
from dalle3_etl.shard import sinks, tarstream

REPO = Path(__file__).resolve().parents[2]


def corpus(root: Path) -> list[Path]:
    """s-1: small images and one large one in the middle; s-2: small images only."""
    s1 = []
    for i in range(8):
        nbytes = 60_000 if i == 4 else 2_000
        s1 += [(f"k{i}.jpg", img(nbytes=nbytes)), (f"k{i}.json", js(caption=f"sample {i}"))]
    s1 += [("nocap.jpg", img()), ("nocap.json", js(caption=""))]  # a reject line too
    s2 = [m for i in range(4) for m in ((f"m{i}.png", img("png", nbytes=1500)), (f"m{i}.json", js(caption=f"m {i}")))]
    return write_shards(root, {"s-1.tar": s1, "s-2.tar": s2})


def digest(out: Path) -> dict[str, str]:
    """What a user gets: the parquet and rejects bytes, every file under data/ with its content."""
    found = {
        name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in ("dalle3.parquet", "rejects.jsonl")
    }
    for path in sorted((out / "data").rglob("*")):
        found[str(path.relative_to(out))] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("diskfull")
    paths = corpus(root / "in")
    clean = root / "clean"
    summary = run_convert([source(p) for p in paths], clean, Settings(workers=1))
    assert summary.exit_code == 0 and summary.rows == 12
    return paths, digest(clean)


def assert_failed_cleanly(out: Path, shard_id: str, words: tuple[str, ...]) -> None:
    """The shard is recorded as failed with the OS error and nothing of it is left in OUT."""
    state = out / ".dalle3-etl"
    failure = orjson.loads((state / "failed" / f"{shard_id}.json").read_bytes())["failure"]
    assert any(w in failure for w in words), failure
    assert not (state / "shards" / f"{shard_id}.json").exists()
    assert not (state / "parts" / f"{shard_id}.parquet").exists()
    assert not (state / "rejects" / f"{shard_id}.jsonl").exists()
    assert not (out / "data" / shard_id).exists()
    assert not list((state / "staging").iterdir())
    rows = pq.read_table(out / "dalle3.parquet").to_pylist()
    assert all(r["shard"] != shard_id for r in rows)
    assert all(orjson.loads(line)["shard"] != shard_id for line in (out / "rejects.jsonl").read_bytes().splitlines())
    check_output(out, rows)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "dalle3_etl", "convert", *args]


def test_file_size_limit_fails_the_shard_and_a_rerun_completes_it(shards, tmp_path):
    paths, clean = shards
    out = tmp_path / "out"
    limited = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"  # the write fails with EFBIG instead of killing us
        "resource.setrlimit(resource.RLIMIT_FSIZE, (30000, 30000))\n"
        "from dalle3_etl.cli import main\n"
        f"sys.argv = {['dalle3-etl', 'convert', *map(str, paths), '-o', str(out), '--workers', '2']!r}\n"
        "main()\n"
    )
    first = subprocess.run([sys.executable, "-c", limited], capture_output=True, text=True, cwd=REPO)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "FAILED s-1" in first.stdout and "File too large" in first.stdout
    said = " ".join(first.stdout.split())
    assert "1 shard(s) failed, nothing of them was committed: s-1" in said  # not blamed on the input
    assert "could not be read completely" not in said
    assert_failed_cleanly(out, "s-1", ("File too large", "EFBIG"))
    assert (out / ".dalle3-etl" / "shards" / "s-2.json").exists()  # the other shard is complete and kept
    second = subprocess.run(
        cli(*map(str, paths), "-o", str(out), "--workers", "2"), capture_output=True, text=True, cwd=REPO
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 shard(s) already complete" in second.stdout
    assert digest(out) == clean


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root and unshare")
def test_full_filesystem_fails_the_shard_and_a_rerun_after_freeing_space_completes_it(shards, tmp_path):
    paths, clean = shards
    mnt, keep = tmp_path / "mnt", tmp_path / "keep"
    mnt.mkdir()
    keep.mkdir()
    convert = " ".join(map(str, cli(*map(str, paths), "-o", str(mnt / "out"), "--workers", "1")))
    script = f"""
set -u
mount -t tmpfs -o size=96k tmpfs {mnt} || exit 99
{convert} > {keep}/out1.txt 2>&1; echo $? > {keep}/rc1
cp -a {mnt}/out {keep}/run1
mount -o remount,size=64m {mnt}
{convert} > {keep}/out2.txt 2>&1; echo $? > {keep}/rc2
cp -a {mnt}/out {keep}/run2
"""
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, cwd=REPO)
    if proc.returncode == 99 or not (keep / "rc1").exists():
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    log1 = (keep / "out1.txt").read_text()
    assert (keep / "rc1").read_text().strip() == "1", log1
    assert "No space left on device" in log1 and "FAILED s-1" in log1
    assert_failed_cleanly(keep / "run1", "s-1", ("No space left on device", "ENOSPC"))
    assert (keep / "rc2").read_text().strip() == "0", (keep / "out2.txt").read_text()
    assert digest(keep / "run2") == clean
    assert not list((mnt).iterdir())  # the tmpfs lived only in the private mount namespace


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _fail_on_call(n: int, real):
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            _enospc()
        return real(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("where", ["image", "caption", "part", "stream-image"])
def test_injected_enospc_at_each_write(shards, tmp_path, monkeypatch, where):
    paths, clean = shards
    mode = "stream" if where == "stream-image" else "file"
    if where == "image":
        monkeypatch.setattr(tarstream.TarReader, "copy_range", _fail_on_call(5, tarstream.TarReader.copy_range))
    elif where == "caption":
        monkeypatch.setattr(sinks.FileTree, "write_text", _fail_on_call(5, sinks.FileTree.write_text))
    elif where == "part":
        monkeypatch.setattr(sinks.PartWriter, "close", _enospc)
    else:
        monkeypatch.setattr(tarstream.TarReader, "copy_to", _fail_on_call(5, tarstream.TarReader.copy_to))
    out = tmp_path / "out"
    first = run_convert([source(p, mode) for p in paths], out, Settings(workers=1))
    failed = {r.shard_id: r for r in first.results if not r.ok}
    assert "s-1" in failed and "No space left on device" in failed["s-1"].failure
    assert first.exit_code == 1
    assert_failed_cleanly(out, "s-1", ("No space left on device",))
    monkeypatch.undo()
    second = run_convert([source(p, mode) for p in paths], out, Settings(workers=1))
    assert second.exit_code == 0 and {r.shard_id for r in second.results} == set(failed)
    assert digest(out) == clean
