"""Caption choice, cleaning, size from JSON, reject reasons."""

from __future__ import annotations

import unicodedata

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dalle3_etl.settings import Settings
from dalle3_etl.shard.rows import JsonInfo, Reason, Reject, choose_caption, clean_caption, json_size, parse_json

CHAIN = Settings().caption_chain


@pytest.mark.parametrize(
    "raw, clean",
    [("a\nb", "a b"), ("  a  b \r\n c\t", "a b c"), ("x\u2028y\u00a0z", "x y z"), ("日本語 テスト", "日本語 テスト")],
)
def test_clean_caption_never_leaves_a_line_break_or_whitespace_run(raw, clean):
    assert clean_caption(raw) == clean


def test_caption_falls_back_along_the_chain_and_lists_give_first_non_empty():
    assert choose_caption({"short_caption": "a"}, CHAIN) == ("a", "short_caption")
    assert choose_caption({"short_caption": " \n", "long_caption": "long"}, CHAIN) == ("long", "long_caption")
    obj = {"short_caption": "", "short_caption2": ["", "  ", 3, "third\nline"]}
    assert choose_caption(obj, CHAIN) == ("third line", "short_caption2")
    assert choose_caption({"original_prompt": "p"}, CHAIN) == ("p", "original_prompt")


def test_no_usable_caption_explains_each_field():
    caption, detail = choose_caption({"short_caption": 5, "long_caption": "  ", "short_caption2": []}, CHAIN)
    assert caption is None
    assert "short_caption: wrong type (int)" in detail and "long_caption: empty" in detail
    assert "original_prompt: missing" in detail


@pytest.mark.parametrize(
    "obj, expected",
    [
        ({"width": 1024, "height": 768}, (1024, 768)),
        ({"width": 1024.0, "height": "768"}, (1024, 768)),
        ({"width": 0, "height": 768}, (None, None)),
        ({"width": -5, "height": 768}, (None, None)),
        ({"width": 70000, "height": 768}, (None, None)),
        ({"width": "wide", "height": 768}, (None, None)),
        ({"width": True, "height": 768}, (None, None)),
        ({"height": 768}, (None, None)),
        ({}, (None, None)),
    ],
)
def test_json_size_only_trusts_positive_bounded_integers(obj, expected):
    w, h, detail = json_size(obj, 65535)
    assert (w, h) == expected
    assert (detail == "") == (expected != (None, None))


def test_parse_json_rejects_with_reasons():
    s = Settings()
    assert parse_json(b"{not json", s).reason == Reason.JSON_INVALID
    assert "UTF-8" in parse_json(b'{"short_caption": "\xff\xfe"}', s).detail
    assert parse_json(b"[1, 2]", s).reason == Reason.JSON_NOT_OBJECT
    info = parse_json(orjson.dumps({"short_caption": "c", "width": 1, "height": 2, "source": "r/x"}), s)
    assert isinstance(info, JsonInfo) and (info.caption, info.width, info.height, info.source) == ("c", 1, 2, "r/x")


def test_extra_fields_keep_lists_and_stringify_other_types():
    s = Settings(fields=("short_caption2", "resolution", "url"))
    info = parse_json(orjson.dumps({"short_caption": "c", "short_caption2": ["a", "b"], "resolution": [3, 4]}), s)
    assert info.extras == {"short_caption2": ["a", "b"], "resolution": "[3,4]", "url": None}
    assert not isinstance(info, Reject)


def test_a_null_inside_a_list_field_stays_null_not_the_text_null():
    s = Settings(fields=("short_caption2",))
    info = parse_json(orjson.dumps({"short_caption": "c", "short_caption2": [None, "", 3, "x"]}), s)
    assert info.extras == {"short_caption2": [None, "", "3", "x"]}


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("\u200b\u200c\u200d\u2060\ufeff", ""),  # zero-width and format characters only: empty
        (" \u200b \n \u00ad\u2066 ", ""),
        ("a\x00b\x1b[0mc\x07", "ab[0mc"),  # NUL, ESC, BEL removed
        ("del\x7f c1\x80\x9f", "del c1"),
        ("x \x00 y", "x y"),  # removing a control never leaves a double space
        ("nel\x85 fs\x1c", "nel fs"),  # NEL and \x1c-\x1f are whitespace
        ("\u200bhidden start", "\u200bhidden start"),  # format characters inside text are kept
        ("\U0001f468\u200d\U0001f469", "\U0001f468\u200d\U0001f469"),  # (a ZWJ emoji sequence)
    ],
)
def test_clean_caption_removes_controls_and_finds_invisible_captions_empty(raw, clean):
    assert clean_caption(raw) == clean


@given(st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs"))))
def test_clean_caption_of_text_without_controls_is_the_whitespace_cleaning(text):
    assert clean_caption(text) == " ".join(text.split())


@given(st.text())
def test_clean_caption_never_leaves_a_control_character_or_an_invisible_only_caption(text):
    cleaned = clean_caption(text)
    assert cleaned == " ".join(cleaned.split())
    assert not any(unicodedata.category(c) == "Cc" for c in cleaned)
    assert cleaned == "" or any(not c.isspace() and unicodedata.category(c) != "Cf" for c in cleaned)
