"""Random hostile names everywhere at once (the safety issue's 'done when'): markup, control characters, '..',
separators and invalid UTF-8 in shard file names, member names and OUT paths. Whatever they are: no traceback,
exit code 0, 1 or 2, nothing outside OUT changed, nothing of the user's removed."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from badinput_helpers import img, js, tar_bytes
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dalle3_etl.cli import app

runner = CliRunner()

# What hostile names are made of: rich markup, separators, dots, control characters (ESC, BEL, DEL, C1),
# format characters, a non-ASCII letter and bytes that are not UTF-8 (as surrogate escapes, like os.fsdecode).
PIECES = [
    "[",
    "]",
    "[/]",
    "[red]",
    "[bold]",
    "/",
    "\\",
    ".",
    "..",
    "\x1b[31m",
    "\x07",
    "\x7f",
    "\x85",
    "\u200b",
    "é",
    "\udcff",
    "\udcc3",
    "a",
    "0",
    "-",
    "_",
    " ",
    ".tar",
    ".jpg",
    ".json",
    "data-000001",
]
names = st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join)


def snapshot(root: Path, skip: Path) -> dict[str, bytes | str]:
    """Every entry below `root` except `skip` (OUT): file bytes, link targets, folders."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == skip or skip in here.parents:
            continue
        for name in dirnames + filenames:
            path = here / name
            if path == skip:
                continue
            rel = os.fsencode(path.relative_to(root)).decode("latin-1")
            if path.is_symlink():
                out[rel] = "link " + os.readlink(path)
            elif path.is_file():
                out[rel] = path.read_bytes()
            else:
                out[rel] = "dir"
    return out


def _creatable(name: str) -> bool:
    raw = os.fsencode(name)
    return b"\0" not in raw and 0 < len(raw) <= 200 and all(p not in (b"", b".", b"..") for p in raw.split(b"/"))


@settings(
    max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "80")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(shard=names, member=names, out=names, other=names)
def test_hostile_names_anywhere_never_crash_and_never_touch_the_users_files(shard, member, out, other):
    root = Path(tempfile.mkdtemp(prefix="hostile-"))
    try:
        user = root / "user"
        (user / "sub").mkdir(parents=True)
        (user / "photo.jpg").write_bytes(b"precious")
        (user / "sub" / "notes.txt").write_bytes(b"mine")
        inputs = root / "in"
        inputs.mkdir()
        shard_name = shard if _creatable(shard) else "data-000000"
        shard_path = inputs / (shard_name + ".tar")
        shard_path.parent.mkdir(parents=True, exist_ok=True)
        members = [
            (f"{member}.jpg", img()),
            (f"{member}.json", js()),
            (f"{other}.png", img("png")),
            (f"{other}.json", js(caption="caption " + other.encode("utf-8", "replace").decode())),
            ("ok/0001.jpg", img()),
            ("ok/0001.json", js()),
        ]
        try:
            data = tar_bytes(members)
        except (UnicodeError, ValueError):  # tarfile itself refuses the name: use a plain one for that member
            data = tar_bytes(members[4:])
        shard_path.write_bytes(data)
        out_dir = root / "work" / (out if _creatable(out) else "out")
        (root / "work").mkdir()
        before = snapshot(root, out_dir)

        for args in (
            ["convert", str(shard_path), "-o", str(out_dir), "-w", "1"],
            ["status", str(out_dir)],
            ["verify", str(out_dir)],
            ["head", str(out_dir)],
            ["stats", str(out_dir)],
        ):
            result = runner.invoke(app, args, env={"COLUMNS": "200"})
            assert result.exception is None or isinstance(result.exception, SystemExit), (
                args,
                repr(result.exception),
                result.output,
            )
            assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.output)
            assert "Traceback" not in result.output
            assert "\x1b[31m" not in result.output and "\x07" not in result.output  # never sent to the terminal
            if args[0] == "convert":
                event(f"convert exit {result.exit_code}")
            if args[0] == "convert" and result.exit_code == 2:
                break  # refused up front: nothing else to look at

        after = snapshot(root, out_dir)
        made = {os.fsencode(p.relative_to(root)).decode("latin-1") for p in out_dir.parents if root in p.parents}
        assert {k: v for k, v in after.items() if k not in made} == {
            k: v for k, v in before.items() if k not in made
        }  # OUT's parents may be created (mkdir -p)
    finally:
        shutil.rmtree(root, ignore_errors=True)
