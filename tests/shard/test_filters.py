"""Filters (shard/shape.py) at their boundaries, the captions --extra-captions adds (shard/rows.py), and the
settings behind both (checked, pinned only when set)."""

from __future__ import annotations

import orjson
import pytest

from dalle3_etl.settings import Settings, SettingsError, load_settings
from dalle3_etl.shard.rows import Reason, parse_json
from dalle3_etl.shard.shape import FILTERS, Filters, filter_of


def info_of(settings: Settings = Settings(), **fields):
    obj = {"short_caption": "a red fox in the snow", "width": 1024, "height": 1024, "source": "dalle3"}
    obj.update(fields)
    return parse_json(orjson.dumps({k: v for k, v in obj.items() if v is not ...}), settings)


def verdict(settings: Settings, width: int = 1024, height: int = 1024, **fields) -> str | None:
    """None when the sample is kept, else the filtered reject's detail."""
    rejected = Filters.from_settings(settings).check(info_of(settings, **fields), width, height)
    if rejected is None:
        return None
    assert rejected.reason == Reason.FILTERED
    return rejected.detail


def test_min_side_is_the_shorter_side_and_equal_passes():
    s = Settings(min_side=1024)
    assert verdict(s, 1024, 1792) is None and verdict(s, 1792, 1024) is None
    assert verdict(s, 1023, 1792) == "min_side: 1023 < 1024 (1023x1792)"
    assert verdict(s, 4000, 1023) == "min_side: 1023 < 1024 (4000x1023)"


def test_max_aspect_is_longer_over_shorter_and_equal_passes():
    s = Settings(max_aspect=2.0)
    assert verdict(s, 2048, 1024) is None and verdict(s, 1024, 2048) is None
    # 2049/1024 = 2.00098: shown with the digits it takes not to read as 2.0
    assert verdict(s, 2049, 1024) == "max_aspect: 2.001 > 2.0 (2049x1024)"
    assert verdict(s, 1024, 2049) == "max_aspect: 2.001 > 2.0 (1024x2049)"
    assert verdict(s, 1984, 816) == "max_aspect: 2.43 > 2.0 (1984x816)"
    square = Settings(max_aspect=1)
    assert verdict(square, 1024, 1024) is None
    assert verdict(square, 1025, 1024).startswith("max_aspect: 1.001 > 1.0")


def test_sources_keep_only_those_and_a_missing_source_is_filtered():
    s = Settings(sources=("dalle3", "bing"))
    assert verdict(s, source="dalle3") is None and verdict(s, source="bing") is None
    assert verdict(s, source="midjourney") == "sources: 'midjourney' not in ['dalle3', 'bing']"
    assert verdict(s, source=...) == "sources: no source (keeping only ['dalle3', 'bing'])"
    assert verdict(s, source="Dalle3") is not None  # exact values, as the JSON spells them


def test_exclude_sources_drop_those_and_keep_a_missing_source():
    s = Settings(exclude_sources=("midjourney",))
    assert verdict(s, source="midjourney") == "exclude_sources: 'midjourney'"
    assert verdict(s, source="dalle3") is None
    assert verdict(s, source=...) is None


def test_min_caption_chars_counts_the_cleaned_caption():
    caption = "  ab \n\t cd\x00  "  # cleaned: "ab cd", 5 characters
    assert verdict(Settings(min_caption_chars=5), short_caption=caption) is None
    assert verdict(Settings(min_caption_chars=6), short_caption=caption) == "min_caption_chars: 5 < 6"
    assert verdict(Settings(min_caption_chars=3), short_caption="日本語") is None  # characters, not bytes


def test_filters_are_checked_in_a_fixed_order_and_the_first_failing_one_is_reported():
    every = Settings(
        min_side=2000, max_aspect=1.5, sources=("dalle3",), exclude_sources=("bing",), min_caption_chars=100
    )
    fails_all = dict(width=1024, height=1792 * 2, source="bing", short_caption="short")
    assert filter_of(verdict(every, **fails_all)) == "min_side"
    assert filter_of(verdict(replace_of(every, min_side=0), **fails_all)) == "max_aspect"
    assert filter_of(verdict(replace_of(every, min_side=0, max_aspect=0), **fails_all)) == "sources"
    assert filter_of(verdict(replace_of(every, min_side=0, max_aspect=0, sources=()), **fails_all)) == (
        "exclude_sources"
    )
    last = replace_of(every, min_side=0, max_aspect=0, sources=(), exclude_sources=())
    assert filter_of(verdict(last, **fails_all)) == "min_caption_chars"
    assert [filter_of(f"{name}: x") for name in FILTERS] == list(FILTERS)
    assert filter_of("something else: x") is None


def replace_of(settings: Settings, **changes) -> Settings:
    from dataclasses import replace

    return replace(settings, **changes)


def test_no_filter_set_means_no_filter_at_all():
    assert not Filters.from_settings(Settings()).active
    assert Filters.from_settings(Settings(exclude_sources=("x",))).active
    assert verdict(Settings(), 1, 65535, source=..., short_caption="a") is None


# -- extra captions -------------------------------------------------------------------------------------


def test_extra_captions_follow_the_first_cleaned_and_without_empty_ones_or_repeats():
    s = Settings(extra_captions=("long_caption", "short_caption2"))
    info = info_of(
        s,
        short_caption="a red fox",
        long_caption="A red fox\nin the  snow.",
        short_caption2=["a red  fox", "", " \u200b ", "a fox", 5, None, "A red fox in the snow.", "a fox\n"],
    )
    assert info.caption == "a red fox"
    assert info.captions == ["a red fox", "A red fox in the snow.", "a fox"]


def test_extra_captions_after_a_fallback_caption_drop_the_repeat_of_it():
    s = Settings(extra_captions=("long_caption", "original_prompt"))
    info = info_of(s, short_caption=..., long_caption="A long one.", original_prompt=["not a string field", "x"])
    assert info.caption == "A long one."  # the caption chain is unchanged
    assert info.captions == ["A long one.", "not a string field", "x"]  # a list gives each of its strings
    assert info_of(s, long_caption=..., original_prompt=...).captions == ["a red fox in the snow"]


def test_extra_captions_ignore_values_that_are_not_text():
    s = Settings(extra_captions=("long_caption",))
    assert info_of(s, long_caption={"a": "b"}).captions == ["a red fox in the snow"]
    assert info_of(s, long_caption=12).captions == ["a red fox in the snow"]


def test_without_extra_captions_nothing_is_collected():
    assert info_of(long_caption="more").captions is None


# -- settings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("min_side", -1, "--min-side -1: must be at least 0"),
        ("max_aspect", 0.5, "--max-aspect 0.5: must be 0 (off) or at least 1"),
        ("max_aspect", -2, "--max-aspect -2: must be 0 (off) or at least 1"),
        ("max_aspect", float("nan"), "--max-aspect nan: expected a number"),
        ("min_caption_chars", -3, "--min-caption-chars -3: must be at least 0"),
        ("sources", "dalle3", "--sources dalle3: expected a list of non-empty strings"),
        ("extra_captions", ("",), "--extra-captions"),
        ("min_side", True, "--min-side True: expected a whole number"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(key, value, words):
    with pytest.raises(SettingsError) as exc:
        load_settings(None, **{key: value})
    assert words in str(exc.value)


def test_good_values_and_the_off_values():
    s = load_settings(None, min_side=0, max_aspect=0, sources=(), min_caption_chars=0)
    assert not Filters.from_settings(s).active
    s = load_settings(None, max_aspect=1, sources=("a", "b", "a"), extra_captions=("long_caption",))
    assert (s.max_aspect, s.sources) == (1.0, ("a", "b"))


def test_a_config_file_sets_them_and_a_bad_one_names_the_key(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[convert]\nmin_side = 1024\nexclude_sources = ["midjourney"]\nextra_captions = ["long_caption"]\n')
    s = load_settings(cfg)
    assert (s.min_side, s.exclude_sources, s.extra_captions) == (1024, ("midjourney",), ("long_caption",))
    cfg.write_text('[convert]\nmax_aspect = "2"\n')
    with pytest.raises(SettingsError, match=r"\[convert\] max_aspect = \"2\": expected a number"):
        load_settings(cfg)


def test_the_captions_column_cannot_also_be_a_copied_field():
    with pytest.raises(SettingsError, match="'captions' is the column --extra-captions writes"):
        load_settings(None, extra_captions=("long_caption",), fields=("captions",))
    assert load_settings(None, fields=("captions",)).fields == ("captions",)  # without extra captions: a field


def test_the_new_settings_are_pinned_only_when_set():
    """An output made before these settings existed (or without them) has the same fingerprint."""
    plain = Settings().output_fingerprint()
    assert not {"min_side", "max_aspect", "sources", "exclude_sources", "min_caption_chars", "extra_captions"} & set(
        plain
    )
    for key, value in [
        ("min_side", 1024),
        ("max_aspect", 2.0),
        ("sources", ("dalle3",)),
        ("exclude_sources", ("midjourney",)),
        ("min_caption_chars", 20),
        ("extra_captions", ("long_caption",)),
    ]:
        pinned = Settings(**{key: value}).output_fingerprint()
        assert pinned[key] == (list(value) if isinstance(value, tuple) else value)
        assert {k: v for k, v in pinned.items() if k != key} == plain
