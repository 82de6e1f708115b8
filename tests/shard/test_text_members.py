"""Text members (`<key>.txt`) as a sample's third role: the naming rule, classify, Pairing's completion rule,
the caption chain over JSON fields and text members, and WebP sizes against Pillow."""

from __future__ import annotations

import io

import pytest
from PIL import Image, features

from dalle3_etl.settings import SAMPLE_EXTENSIONS, Settings, SettingsError, load_settings
from dalle3_etl.shard import imageheader
from dalle3_etl.shard.rows import JsonInfo, Reject, parse_json
from dalle3_etl.shard.samples import IMAGE_EXTENSIONS, JSON_EXTENSION, Entry, Half, Pairing, classify
from dalle3_etl.shard.textmembers import TextBad, pairing_for, resolve

# -- the naming rule ---------------------------------------------------------------------------------


def test_txt_alone_and_any_case_name_the_text_member():
    s = Settings(caption_field="txt", caption_fallbacks=("long_caption", ".TXT", ".caption"), extra_captions=("txt",))
    assert s.caption_field == ".txt"
    assert s.caption_fallbacks == ("long_caption", ".txt", ".caption")  # repeats after the rule dropped later
    assert s.caption_chain == (".txt", "long_caption", ".caption")
    assert s.text_exts == {"txt", "caption"}
    assert Settings(caption_field="caption").text_exts == frozenset()  # img2dataset's JSON field, not a member


@pytest.mark.parametrize("name", [".json", ".jpg", ".WEBP", ".", ".a/b", ".a.b", ". txt", "." + "x" * 17])
def test_a_dot_name_that_is_not_a_text_member_is_refused(name):
    with pytest.raises(SettingsError, match="not a usable text member"):
        Settings(caption_field=name)
    with pytest.raises(SettingsError, match="caption_fallbacks"):
        load_settings(caption_fallbacks=("short_caption", name))
    with pytest.raises(SettingsError, match="extra_captions"):
        load_settings(extra_captions=(name,))


def test_the_settings_extension_list_is_the_pairing_one():
    assert SAMPLE_EXTENSIONS == IMAGE_EXTENSIONS | {JSON_EXTENSION}


@pytest.mark.parametrize("names", [("width",), ("a", "b", "c"), ("w", "w")])
def test_size_fields_must_be_two_distinct_names(names):
    with pytest.raises(SettingsError, match="size_fields|size-fields"):
        load_settings(size_fields=names)


def test_size_fields_pick_the_json_fields_and_are_pinned_only_when_set():
    s = Settings(size_fields=("original_width", "original_height"))
    info = parse_json(
        b'{"short_caption": "x", "width": 5, "height": 6, "original_width": 50, "original_height": 60}', s
    )
    assert (info.width, info.height) == (50, 60)
    assert "size_fields" in s.output_fingerprint() and "size_fields" not in Settings().output_fingerprint()
    missing = parse_json(b'{"short_caption": "x", "width": 5, "height": 6}', s)
    assert missing.width is None and missing.size_detail == "JSON has no original_width/original_height"


# -- classify and Pairing -----------------------------------------------------------------------------


def test_classify_gives_text_only_for_named_extensions():
    assert classify("a/b.1.txt") == ("a/b.1", None, "txt")
    assert classify("a/b.1.TXT", frozenset({"txt"})) == ("a/b.1", "text", "TXT")
    assert classify("k.jpg", frozenset({"txt"})) == ("k", "image", "jpg")


def _add(pairing: Pairing, key: str, role: str):
    return pairing.add(key, role, f"{key}{role if role[0] == '.' else '.' + role}", f"{key}:{role}")


def test_a_sample_is_complete_when_image_json_and_every_named_text_are_there():
    p = Pairing(10, text_roles=frozenset({".txt", ".caption"}))
    assert _add(p, "k", "image") == (None, [])
    assert _add(p, "k", "json") == (None, [])
    assert _add(p, "k", ".txt") == (None, [])
    done, problems = _add(p, "k", ".caption")
    assert problems == [] and done.members == ["k.image", "k.json", "k.txt", "k.caption"]
    assert p.pending == {} and p.pending_bytes == 0


def test_without_text_roles_image_and_json_complete_a_sample_as_before():
    p = Pairing(10)
    _add(p, "k", "json")
    done, _ = _add(p, "k", "image")
    assert done is not None and done.texts is None


def test_an_incomplete_convertible_sample_is_handed_back_ready_when_pushed_out_in_arrival_order():
    p = Pairing(2, text_roles=frozenset({".txt"}))
    _add(p, "a", "image")
    _add(p, "a", "json")  # a: waits for its .txt
    _add(p, "b", "json")  # b: no image yet, not convertible
    done, problems = _add(p, "c", "image")  # 3 waiting > 2: the oldest (a) goes, ready
    assert done is None and [(e.key, e.ready) for e in problems] == [("a", True)]
    late, problems = _add(p, "a", ".txt")  # a was converted: its late member is a duplicate
    assert late is None and "already converted" in problems[0].reason


def test_leftovers_are_ready_only_when_convertible():
    p = Pairing(10, text_roles=frozenset({".txt"}), jsonless=True)
    _add(p, "img+json", "image")
    _add(p, "img+json", "json")
    _add(p, "img+txt", "image")
    _add(p, "img+txt", ".txt")
    _add(p, "img", "image")
    _add(p, "txt", ".txt")
    assert [(e.key, e.ready) for e in p.leftovers()] == [
        ("img+json", True),
        ("img+txt", True),
        ("img", False),
        ("txt", False),
    ]
    q = Pairing(10, text_roles=frozenset({".txt"}), jsonless=False)  # the text only in --extra-captions
    _add(q, "img+txt", "image")
    _add(q, "img+txt", ".txt")
    assert [e.ready for e in q.leftovers()] == [False]


def test_a_second_text_member_for_a_key_is_a_duplicate():
    p = Pairing(10, text_roles=frozenset({".txt"}))
    _add(p, "k", ".txt")
    _, problems = p.add("k", ".txt", "k.TXT", "again")
    assert "second .txt member" in problems[0].reason and "'k.txt'" in problems[0].reason


def test_pairing_for_the_settings():
    p = pairing_for(Settings(extra_captions=(".txt",)))
    assert p.text_roles == {".txt"} and not p.jsonless
    assert pairing_for(Settings(caption_fallbacks=("txt",))).jsonless


# -- the caption chain over JSON fields and text members ------------------------------------------------


def _entry(settings: Settings, json: bytes | None, **texts) -> Entry:
    entry = Entry("k", image=Half("k.jpg", "ref"))
    if json is not None:
        entry.json = Half("k.json", parse_json(json, settings))
    for ext, value in texts.items():
        entry.put("." + ext, Half(f"k.{ext}", value))
    return entry


def test_the_chain_follows_the_settings_order_over_fields_and_text_members():
    txt_first = Settings(caption_field="txt", caption_fallbacks=("short_caption",))
    field_first = Settings(caption_field="short_caption", caption_fallbacks=("txt",))
    doc = b'{"short_caption": "from  json"}'
    assert resolve(_entry(txt_first, doc, txt=" from\ntext "), txt_first).json.payload.caption == "from text"
    assert resolve(_entry(field_first, doc, txt="from text"), field_first).json.payload.caption == "from json"
    assert resolve(_entry(txt_first, doc, txt=" \u200b "), txt_first).json.payload.caption == "from json"


def test_a_bad_or_missing_text_member_lets_the_chain_go_on_and_the_detail_says_why():
    s = Settings(caption_field="txt", caption_fallbacks=("long_caption",))
    bad = resolve(_entry(s, b"{}", txt=TextBad("is not valid UTF-8: byte 0xff at offset 0")), s).json.payload
    assert bad.caption is None
    assert bad.caption_detail == ".txt: member 'k.txt' is not valid UTF-8: byte 0xff at offset 0; long_caption: missing"
    missing = resolve(_entry(s, b'{"long_caption": "fallback"}'), s).json.payload
    assert missing.caption == "fallback"


def test_a_json_less_sample_gets_an_empty_json_half_named_after_its_text_member():
    s = Settings(caption_field="txt", fields=("url",))
    info = resolve(_entry(s, None, txt="a cat"), s).json
    assert info.member == "k.txt"
    assert (info.payload.caption, info.payload.width, info.payload.extras) == ("a cat", None, {"url": None})
    assert info.payload.size_detail == "no JSON member"


def test_extra_captions_from_a_text_member():
    s = Settings(extra_captions=("txt",))
    info = resolve(_entry(s, b'{"short_caption": "one"}', txt="two"), s).json.payload
    assert (info.caption, info.captions) == ("one", ["one", "two"])


def test_a_rejected_member_is_left_for_the_writer():
    s = Settings(caption_field="txt")
    unsafe = Reject("unsafe_member", "bad name")
    assert resolve(_entry(s, b"{}", txt=unsafe), s).json.payload is unsafe
    broken = _entry(s, b"[]", txt="x")
    assert isinstance(resolve(broken, s).json.payload, Reject)
    assert type(resolve(_entry(s, b"{}", txt="x"), s).json.payload) is JsonInfo


# -- WebP sizes -------------------------------------------------------------------------------------


@pytest.mark.skipif(not features.check("webp"), reason="Pillow without WebP")
@pytest.mark.parametrize(
    "mode, lossless, chunk", [("RGB", False, b"VP8 "), ("RGB", True, b"VP8L"), ("RGBA", False, b"VP8X")]
)
@pytest.mark.parametrize("size", [(1, 1), (37, 512), (1023, 17), (16383, 3)])
def test_webp_sizes_match_pillow(mode, lossless, chunk, size):
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "WEBP", lossless=lossless)
    data = buf.getvalue()
    assert data[12:16] == chunk
    assert imageheader.signature_problem("webp", data[: imageheader.SIGNATURE_BYTES]) is None
    with Image.open(io.BytesIO(data)) as im:
        assert imageheader.image_size_from_bytes(data) == im.size == size
