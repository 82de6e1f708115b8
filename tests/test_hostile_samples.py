"""Hostile samples: one sample's trouble gets that sample a clear result and never costs the shard.

Shards are hand-made (badinput_helpers)."""

from __future__ import annotations

import pytest

from badinput_helpers import convert, img, js, write_shards
from dalle3_etl.records import Reason


# -- captions ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["file", "stream"])
def test_invisible_captions_fall_back_and_control_characters_are_removed(tmp_path, mode):
    cases = {
        "zw": (dict(caption="\u200b\u200c\u200d\u2060\ufeff", long_caption="the long one"), "the long one"),
        "zw-spaces": (dict(caption=" \u200b \n\u00ad ", long_caption="\u2066\u2069", short_caption2=["\u200b", "third"]),
                      "third"),
        "ctl": (dict(caption="a\x00b\x1b[31mred\x07 \x7fdel\x9bc1"), "ab[31mred delc1"),
        "ctl-ws": (dict(caption="tab\tnew\nline\x85nel\x1fus"), "tab new line nel us"),
        "zwj-kept": (dict(caption="family \U0001F468\u200d\U0001F469 sign"), "family \U0001F468\u200d\U0001F469 sign"),
        "plain": (dict(caption="  A  red fox,\r\n in the snow.  "), "A red fox, in the snow."),
    }
    members = []
    for key, (fields, _) in cases.items():
        members += [(f"{key}.jpg", img()), (f"{key}.json", js(**fields))]
    members += [("none.jpg", img()), ("none.json", js(caption="\u200b\x00", long_caption=...))]
    (path,) = write_shards(tmp_path / "in", {"s.tar": members})
    res = convert([path], tmp_path / "out", mode)
    assert {r["key"]: r["caption"] for r in res.rows} == {k: c for k, (_, c) in cases.items()}
    for key, (_, caption) in cases.items():  # check_output also holds the .txt to the parquet
        assert (tmp_path / "out/data/s" / f"{key}.txt").read_bytes() == caption.encode()
    line = res.reject("none.jpg")
    assert line["reason"] == Reason.NO_CAPTION
    assert "short_caption: empty (only control or invisible format characters)" in line["detail"]
