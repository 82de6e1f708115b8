"""img2dataset / WebDataset shards end to end: `.txt` captions, `.webp` images, img2dataset's JSON, samples
without JSON, bad text members, member order, worker count, resume after SIGKILL."""

from __future__ import annotations

import random
import signal

import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest
from badinput_helpers import MODES, convert, img, js, tar_bytes, write_shards
from conftest import convert as convert_cli_way
from PIL import Image
from test_resume import assert_same_output, leftovers, resume, run_convert_cli
from typer.testing import CliRunner

from dalle3_etl.cli import app
from dalle3_etl.devtools.synth import write_img2dataset_corpus
from dalle3_etl.devtools.synth.img2dataset import i2d_shard_name

SHARDS = 3
PER_SHARD = 40


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("i2d")
    truth = write_img2dataset_corpus(root, shards=SHARDS, per_shard=PER_SHARD, seed=3)
    return root, truth


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The corpus converted with --caption-field txt, 1 worker."""
    root, _ = corpus
    out = tmp_path_factory.mktemp("i2d_ref") / "out"
    result = CliRunner().invoke(app, ["convert", str(root), "-o", str(out), "--caption-field", "txt", "-w", "1", "-q"])
    assert result.exit_code == 0, result.output
    return out


def test_rows_caption_files_and_entry_match_the_truth(corpus, reference):
    root, truth = corpus
    df = pd.read_parquet(reference / "dalle3.parquet")
    want = [t for t in truth if t.caption is not None]
    assert len(want) < len(truth), "the corpus has empty .txt captions"
    assert list(df["key"]) == [t.key for t in want]
    assert list(df["caption"]) == [t.caption for t in want]
    assert list(zip(df["width"], df["height"], strict=True)) == [(t.width, t.height) for t in want]
    assert list(df["filename"]) == [f"{t.shard}/{t.image_member}" for t in want]
    for name, caption in zip(df["filename"], df["caption"], strict=True):
        image = reference / "data" / name
        assert image.with_suffix(".txt").read_text(encoding="utf-8") == caption
        assert image.read_bytes()[:4] == b"RIFF"
    with Image.open(reference / "data" / df["filename"][0]) as im:
        assert im.size == (df["width"][0], df["height"][0])
    rejects = [orjson.loads(line) for line in (reference / "rejects.jsonl").read_bytes().splitlines()]
    assert [(r["member"], r["reason"]) for r in rejects] == [
        (t.image_member, "no_caption") for t in truth if t.caption is None
    ]
    assert all(r["detail"].startswith("no usable caption (.txt: empty;") for r in rejects)
    entries = orjson.loads((reference / "multidatabackend.json").read_bytes())
    assert entries[0]["instance_data_dir"] == str(reference / "data") and entries[0]["caption_strategy"] == "textfile"


def test_hugging_face_datasets_reads_the_parquet(reference, corpus):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_parquet(str(reference / "dalle3.parquet"))
    assert ds.num_rows == sum(t.caption is not None for t in corpus[1])
    assert ds[0]["caption"] and ds[0]["filename"].endswith(".webp")


def test_size_fields_take_the_json_fields_named(corpus, tmp_path):
    root, truth = corpus
    out = tmp_path / "out"
    args = [
        "convert",
        str(root),
        "-o",
        str(out),
        "--caption-field",
        "txt",
        "--size-fields",
        "original_width,original_height",
    ]
    assert CliRunner().invoke(app, [*args, "-q", "--no-images"]).exit_code == 0
    df = pd.read_parquet(out / "dalle3.parquet")
    by_key = {t.key: t for t in truth}
    assert all(
        w == 3 * by_key[k].width and h == 3 * by_key[k].height for k, w, h in df[["key", "width", "height"]].values
    )


@pytest.mark.parametrize("flags", [["--caption-field", ".json"], ["--size-fields", "w"], ["--extra-captions", ".png"]])
def test_bad_caption_or_size_names_exit_2_before_any_work(corpus, tmp_path, flags):
    result = CliRunner().invoke(app, ["convert", str(corpus[0]), "-o", str(tmp_path / "out"), *flags])
    assert result.exit_code == 2 and not (tmp_path / "out").exists()
    assert "Traceback" not in result.output


def test_one_or_two_workers_give_the_same_bytes(corpus, reference, tmp_path):
    out = tmp_path / "out"
    code, log = run_convert_cli([corpus[0]], out, "-w", "2", "--caption-field", "txt")
    assert code == 0, log
    assert_same_output(out, reference)


def test_sigkill_mid_shard_then_rerun_gives_the_uninterrupted_output(corpus, reference, tmp_path):
    out = tmp_path / "out"
    crash = f"sample:{i2d_shard_name(1)}:10"
    code, log = run_convert_cli([corpus[0]], out, "-w", "1", "--caption-field", "txt", crash=crash)
    assert code == -signal.SIGKILL, log
    resume([corpus[0]], out, "--caption-field", "txt")
    assert_same_output(out, reference)
    assert leftovers(out) == []


# -- member order ------------------------------------------------------------------------------------


def _i2d_members(n: int) -> list[tuple[str, bytes]]:
    members = []
    for i in range(n):
        key = f"{i:09d}"
        meta = {"key": key, "status": "success", "caption": f"json {i}", "width": 64, "height": 48}
        if i % 4 == 3:
            members += [(f"{key}.jpg", img()), (f"{key}.json", orjson.dumps(meta))]  # no .txt: the JSON caption
        else:
            members += [(f"{key}.jpg", img()), (f"{key}.json", orjson.dumps(meta)), (f"{key}.txt", f"txt {i}".encode())]
    return members


@pytest.mark.parametrize("mode", MODES)
def test_an_unordered_tar_gives_the_rows_of_the_ordered_one(tmp_path, mode):
    members = _i2d_members(24)
    shuffled = members[:]
    random.Random(5).shuffle(shuffled)
    write_shards(tmp_path / "a", {"00000.tar": members})
    write_shards(tmp_path / "b", {"00000.tar": shuffled})
    opts = {"caption_field": ".txt", "caption_fallbacks": ("caption",)}
    ordered = convert([tmp_path / "a" / "00000.tar"], tmp_path / "oa", mode, **opts)
    unordered = convert([tmp_path / "b" / "00000.tar"], tmp_path / "ob", mode, **opts)
    assert ordered.rejects == unordered.rejects == []
    key = lambda r: r["key"]  # noqa: E731
    assert sorted(ordered.rows, key=key) == sorted(unordered.rows, key=key)
    assert [r["caption"] for r in sorted(ordered.rows, key=key)] == [
        f"json {i}" if i % 4 == 3 else f"txt {i}" for i in range(24)
    ]


def test_a_sample_waiting_past_max_pending_is_converted_with_the_next_caption(tmp_path):
    """The .txt comes after more than max_pending other members: the sample went on without it."""
    members = _i2d_members(6)
    late = members.pop(2)  # 000000000.txt
    members.append(late)
    write_shards(tmp_path / "in", {"00000.tar": members})
    opts = {"caption_field": "txt", "caption_fallbacks": ("caption",), "max_pending": 1}
    got = convert([tmp_path / "in" / "00000.tar"], tmp_path / "out", **opts)
    rows = {r["key"]: r["caption"] for r in got.rows}
    # 000000000 waits for its .txt, then 000000003 (no .txt) waits too: 2 > max_pending, the oldest goes on
    assert rows == {
        "000000000": "json 0",
        "000000001": "txt 1",
        "000000002": "txt 2",
        "000000003": "json 3",
        "000000004": "txt 4",
        "000000005": "txt 5",
    }
    assert got.reject("000000000.txt")["reason"] == "duplicate_member"
    assert got.result("00000").notes["text_member_missing"] == 2  # 000000000 (too late) and 000000003


# -- samples without JSON ------------------------------------------------------------------------------


def test_image_and_txt_without_json_is_a_sample_when_the_caption_comes_from_the_txt(tmp_path):
    members = [("a.webp", _webp(30, 20)), ("a.txt", b"a  small\nwebp"), ("b.jpg", img(w=64, h=48)), ("b.txt", b"jpg")]
    write_shards(tmp_path / "in", {"s.tar": members})
    got = convert([tmp_path / "in" / "s.tar"], tmp_path / "out", caption_field="txt", fields=("url",))
    assert [(r["filename"], r["caption"], r["width"], r["height"], r["url"]) for r in got.rows] == [
        ("s/a.webp", "a small webp", 30, 20, None),
        ("s/b.jpg", "jpg", 64, 48, None),
    ]
    assert got.result("s").notes["size_from_header"] == got.result("s").notes["sample_without_json"] == 2
    plain = convert([tmp_path / "in" / "s.tar"], tmp_path / "plain")
    assert plain.rows == [] and plain.reasons("a.webp") == ["image_without_json"]
    assert plain.result("s").notes["other_members"] == 2  # the .txt members: not part of a sample
    extra_only = convert([tmp_path / "in" / "s.tar"], tmp_path / "extra", extra_captions=("txt",))
    assert extra_only.rows == [] and extra_only.reasons("b.jpg") == ["image_without_json"]


def _webp(w: int, h: int) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (w, h)).save(buf, "WEBP")
    return buf.getvalue()


# -- bad text members ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_bad_text_members_are_named_and_the_chain_goes_on(tmp_path, mode):
    members = [
        ("utf16.jpg", img()),
        ("utf16.json", js(caption=None, long_caption="from json")),
        ("utf16.txt", "hello".encode("utf-16")),
        ("empty.jpg", img()),
        ("empty.json", js(caption="the fallback")),
        ("empty.txt", b" \n "),
        ("huge.jpg", img()),
        ("huge.json", js(caption=None)),
        ("huge.txt", b"x" * 5000),
        ("orphan.txt", b"no image"),
        ("twice.jpg", img()),
        ("twice.json", js()),
        ("twice.txt", b"first"),
        ("twice.TXT", b"second"),
        ("bom.jpg", img()),
        ("bom.json", js()),
        ("bom.txt", b"\xef\xbb\xbfwith bom"),
    ]
    write_shards(tmp_path / "in", {"s.tar": members})
    opts = {"caption_field": "txt", "caption_fallbacks": ("short_caption", "long_caption"), "max_json_bytes": 4096}
    got = convert([tmp_path / "in" / "s.tar"], tmp_path / "out", mode, **opts)
    rows = {r["key"]: r["caption"] for r in got.rows}
    assert rows == {"utf16": "from json", "empty": "the fallback", "twice": "first", "bom": "with bom"}
    huge = got.reject("huge.jpg")
    assert huge["reason"] == "no_caption"
    assert "member 'huge.txt' is 5000 bytes, more than max_json_bytes=4096; not read" in huge["detail"]
    orphan = got.reject("orphan.txt")
    assert orphan["reason"] == "text_without_image" and "'orphan'" in orphan["detail"]
    twice = got.reject("twice.TXT")
    assert twice["reason"] == "duplicate_member" and "another .txt member for key 'twice'" in twice["detail"]
    assert len(got.rejects) == 3


def test_a_not_utf8_txt_without_fallback_says_so(tmp_path):
    write_shards(tmp_path / "in", {"s.tar": [("k.png", img("png")), ("k.json", js()), ("k.txt", b"caf\xe9")]})
    got = convert([tmp_path / "in" / "s.tar"], tmp_path / "out", caption_field="txt", caption_fallbacks=())
    assert got.reject("k.png") == {
        "shard": "s",
        "member": "k.png",
        "reason": "no_caption",
        "detail": "no usable caption (.txt: member 'k.txt' is not valid UTF-8: byte 0xe9 at offset 3)",
    }


# -- a DALLE-3 run is unchanged ------------------------------------------------------------------------


def test_txt_members_in_a_dalle3_shard_change_nothing_unless_named(tmp_path):
    from dalle3_etl.devtools.synth import SynthSpec, write_corpus

    write_corpus(tmp_path / "plain", SynthSpec(shards=1, per_shard=30, seed=2, image_bytes=800))
    plain = tmp_path / "plain" / "data-000000.tar"
    import tarfile

    with tarfile.open(plain) as tf:
        members = [(ti.name, tf.extractfile(ti).read()) for ti in tf]
    with_txt = []
    for name, data in members:
        with_txt.append((name, data))
        if name.endswith(".json"):
            with_txt.append((name[:-5] + ".txt", b"a text member"))
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "data-000000.tar").write_bytes(tar_bytes(with_txt))
    a = convert([plain], tmp_path / "oa")
    b = convert([tmp_path / "txt" / "data-000000.tar"], tmp_path / "ob")
    assert (tmp_path / "oa" / "dalle3.parquet").read_bytes() == (tmp_path / "ob" / "dalle3.parquet").read_bytes()
    assert a.rejects == b.rejects
    assert pq.read_table(tmp_path / "ob" / "dalle3.parquet").num_rows > 0


def test_a_caption_member_and_a_txt_as_extra_caption(tmp_path):
    members = [("k.jpg", img()), ("k.json", js()), ("k.caption", b"from .caption"), ("k.txt", b"from .txt")]
    write_shards(tmp_path / "in", {"s.tar": members})
    opts = {"caption_field": ".caption", "extra_captions": ("txt", "short_caption"), "workers": 1}
    convert_cli_way([tmp_path / "in" / "s.tar"], tmp_path / "out", **opts)  # several lines: not check_output's case
    rows = pq.read_table(tmp_path / "out" / "dalle3.parquet").to_pylist()
    assert [(r["caption"], r["captions"]) for r in rows] == [
        ("from .caption", ["from .caption", "from .txt", "a red fox in the snow"])
    ]
    assert (tmp_path / "out" / "data" / "s" / "k.txt").read_text() == "from .caption\nfrom .txt\na red fox in the snow"
