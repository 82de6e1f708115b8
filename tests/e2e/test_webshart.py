"""`convert --webshart`: the indexes read back with the real `webshart` package give, for every kept sample, the
tar member's bytes, the truth's caption and size; rejected, filtered and duplicate samples are absent; the
bytes do not depend on workers or on a crash; refusals write nothing; a touched tar is reported."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import orjson
import pytest
import webshart  # noqa: E402  (the real package, from the test extra)
from badinput_helpers import img, js, tar_bytes
from test_resume import run_convert_cli
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import SynthSpec, write_corpus

runner = CliRunner()


def cli(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})
    return result.exit_code, result.output


def members(tar: Path) -> dict[str, bytes]:
    with tarfile.open(tar) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}


def read_back(source: Path, out: Path) -> dict[tuple[str, str], dict]:
    """(shard, member) -> what webshart gives for every sample of every shard."""
    ds = webshart.discover_dataset(source=str(source), metadata=str(out / "webshart"))
    loader = webshart.TarDataLoader(ds, load_file_data=True)
    got = {}
    tars = sorted(p.name for p in source.glob("*.tar"))  # webshart numbers the shards in name order
    assert ds.num_shards == len(tars)
    for shard, tar in enumerate(tars):
        for i, name in enumerate(loader.list_samples_in_shard(shard)):
            entry = loader.load_sample(shard, i)
            got[(tar, name)] = {
                "data": bytes(entry.data),
                "size": (entry.width, entry.height),
                "caption": entry.caption,
            }
    return got


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("wscorpus") / "shards"
    truth = write_corpus(root, SynthSpec(shards=3, per_shard=25, seed=7, image_bytes=2000))
    (root / "truth.jsonl").unlink()  # the source folder holds only the tars
    return root, truth


def test_webshart_reads_every_kept_sample_as_the_truth(corpus, tmp_path):
    root, truth = corpus
    out = tmp_path / "out"
    code, log = cli("convert", root, "-o", out, "--webshart", "-w", "1", "-q")
    assert code == 0, log
    assert not any((out / "data").rglob("*")), "no image or caption file is written"
    got = read_back(root, out)
    kept = [t for t in truth if t.caption is not None]
    assert len(got) == len(kept)
    for t in kept:
        sample = got[(f"{t.shard}.tar", t.image_member)]
        assert sample["data"] == members(root / f"{t.shard}.tar")[t.image_member]
        assert sample["size"] == (t.width, t.height)
        assert sample["caption"] == t.caption
    entry = orjson.loads((out / "multidatabackend.json").read_bytes())[0]
    assert entry["type"] == "webshart" and entry["source"] == str(root) and entry["metadata"] == str(out / "webshart")
    loader = webshart.TarDataLoader(webshart.discover_dataset(source=str(root), metadata=str(out / "webshart")))
    buckets = loader.list_shard_sample_aspect_buckets([0, 1, 2])
    bucketed = sum(len(v) for shard in buckets for v in shard["buckets"].values())
    assert bucketed == len(kept)
    code, log = cli("verify", out)
    assert code == 0, log


def test_gnu_long_names_and_pax_headers(tmp_path):
    long = "deep/" * 30 + "long-name.jpg"
    names = {long: (64, 48), "ünï/cödé.png": (40, 30), "plain.jpg": (20, 10)}
    for fmt, tar in ((tarfile.GNU_FORMAT, "gnu.tar"), (tarfile.PAX_FORMAT, "pax.tar")):
        items = []
        for name, (w, h) in names.items():
            stem = name.rsplit(".", 1)[0]
            kind = "png" if name.endswith(".png") else "jpeg"
            items += [(name, img(kind, w, h)), (f"{stem}.json", js(f"caption of {stem}", width=w, height=h))]
        (tmp_path / "src").mkdir(exist_ok=True)
        (tmp_path / "src" / tar).write_bytes(tar_bytes(items, fmt))
    out = tmp_path / "out"
    code, log = cli("convert", tmp_path / "src", "-o", out, "--webshart", "-w", "1", "-q", "--extra-captions", "x")
    assert code == 0, log
    got = read_back(tmp_path / "src", out)
    for tar in ("gnu.tar", "pax.tar"):
        raw = members(tmp_path / "src" / tar)
        for name, (w, h) in names.items():
            sample = got[(tar, name)]
            assert sample["data"] == raw[name] and sample["size"] == (w, h)
            assert sample["caption"] == f"caption of {name.rsplit('.', 1)[0]}"
        index = orjson.loads((out / "webshart" / tar.replace(".tar", ".json")).read_bytes())
        assert index["files"][long]["captions"] == [f"caption of {long.rsplit('.', 1)[0]}"]  # the list of captions
    code, log = cli("verify", out)
    assert code == 0, log


def test_rejected_filtered_and_duplicate_samples_are_absent(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    a = [("a1.jpg", img("jpeg", 64, 48)), ("a1.json", js("first", md5="x", width=64, height=48))]
    a += [("a2.jpg", img("jpeg", 10, 10)), ("a2.json", js("too small", md5="y", width=10, height=10))]
    a += [("a3.jpg", img("jpeg", 64, 48)), ("a3.json", js(None, md5="z"))]  # no caption: rejected
    b = [("b1.jpg", img("jpeg", 64, 48)), ("b1.json", js("dup of a1", md5="x", width=64, height=48))]
    b += [("b2.jpg", img("jpeg", 64, 64)), ("b2.json", js("kept", md5="w", width=64, height=64))]
    (src / "data-a.tar").write_bytes(tar_bytes(a))
    (src / "data-b.tar").write_bytes(tar_bytes(b))
    out = tmp_path / "out"
    code, log = cli("convert", src, "-o", out, "--webshart", "-w", "1", "-q", "--dedup", "md5", "--min-side", "20")
    assert code == 0, log
    files = {p.name: list(orjson.loads(p.read_bytes())["files"]) for p in (out / "webshart").iterdir()}
    assert files == {"data-a.json": ["a1.jpg"], "data-b.json": ["b2.jpg"]}
    assert {k[1] for k in read_back(src, out)} == {"a1.jpg", "b2.jpg"}
    code, log = cli("verify", out)
    assert code == 0, log


def index_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "webshart").iterdir())}


def test_same_bytes_for_one_and_two_workers_and_after_a_crash(corpus, tmp_path):
    root, _ = corpus
    code, log = cli("convert", root, "-o", tmp_path / "one", "--webshart", "-w", "1", "-q")
    assert code == 0, log
    code, log = run_convert_cli([root], tmp_path / "two", "--webshart", "-w", "2", "-q")
    assert code == 0, log
    assert index_bytes(tmp_path / "one") == index_bytes(tmp_path / "two")
    crashed = tmp_path / "crashed"
    code, log = run_convert_cli([root], crashed, "--webshart", "-w", "1", "-q", crash="committed:data-000001")
    assert code != 0
    code, log = cli("convert", root, "-o", crashed, "--webshart", "-w", "1", "-q")
    assert code == 0, log
    assert index_bytes(crashed) == index_bytes(tmp_path / "one")
    indexing = tmp_path / "indexing"  # killed between two shards' indexes: the next run writes the rest
    code, log = run_convert_cli([root], indexing, "--webshart", "-w", "1", "-q", crash="webshart:data-000000")
    assert code != 0 and len(index_bytes(indexing)) == 1
    code, log = cli("convert", root, "-o", indexing, "--webshart", "-w", "1", "-q")
    assert code == 0, log
    assert index_bytes(indexing) == index_bytes(tmp_path / "one")


def test_touched_tar_is_reported_by_status_and_verify_and_redone(tmp_path):
    src = tmp_path / "src"
    write_corpus(src, SynthSpec(shards=2, per_shard=5, seed=3, image_bytes=1000))
    (src / "truth.jsonl").unlink()
    out = tmp_path / "out"
    assert cli("convert", src, "-o", out, "--webshart", "-w", "1", "-q")[0] == 0
    tar = src / "data-000001.tar"
    st = tar.stat()
    os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    code, log = cli("status", out)
    assert "tar changed" in log and "data-000001" in log
    code, log = cli("verify", out)
    assert code == 1 and "webshart" in log
    code, log = cli("convert", src, "-o", out, "--webshart", "-w", "1", "-q")  # redone: the offsets hold again
    assert code == 0, log
    assert cli("verify", out)[0] == 0


def test_a_tar_without_index_in_the_folder_fails_verify(corpus, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    root, _ = corpus
    (src / "data-000000.tar").write_bytes((root / "data-000000.tar").read_bytes())
    out = tmp_path / "out"
    assert cli("convert", src / "data-000000.tar", "-o", out, "--webshart", "-w", "1", "-q")[0] == 0
    (src / "data-000002.tar").write_bytes((root / "data-000002.tar").read_bytes())  # never converted
    code, log = cli("verify", out, "--json")
    assert code == 1
    problems = orjson.loads(log)["checks"]
    assert [c for c in problems if c["check"] == "webshart"][0]["examples"][0].endswith(
        "data-000002.tar: no index (webshart skips it)"
    )


@pytest.mark.parametrize(
    "make, options, why",
    [
        (lambda d: [d / "a" / "x.tar", d / "b" / "y.tar"], (), "ONE folder"),
        (lambda d: [d / "a" / "x.tar.gz"], (), "not a plain"),
        (lambda d: [d / "a" / "x.tar"], ("--images",), "leave out --images"),
        (lambda d: [d / "a" / "x.tar"], ("--flat",), "leave out --flat"),
        (lambda d: [d / "a" / "gz.tar"], (), "gzip-compressed"),
    ],
)
def test_refusals_exit_2_and_write_nothing(tmp_path, make, options, why):
    data = tar_bytes([("k.jpg", img()), ("k.json", js())])
    paths = make(tmp_path)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name == "gz.tar" or path.name.endswith(".gz"):
            import gzip

            path.write_bytes(gzip.compress(data))
        else:
            path.write_bytes(data)
    out = tmp_path / "out"
    code, log = cli("convert", *paths, "-o", out, "--webshart", *options)
    assert code == 2 and why in log, log
    assert len(log.strip().splitlines()) == 1
    assert not out.exists()


def test_hub_input_without_keep_tars_is_refused(tmp_path):
    code, log = cli("convert", "hf://datasets/someone/repo/data-000000.tar", "-o", tmp_path / "out", "--webshart")
    assert code == 2
    assert not (tmp_path / "out").exists()
