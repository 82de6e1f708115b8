"""One frozen settings object for a run: defaults here and in config/default.toml, overridden by flags.

Every value is checked before any work, in one place (`settingrules._coerce`), against its field's type and the limits in
the field's metadata: from the TOML file, from flags, and when a `Settings` is built in code. A bad value is a
`SettingsError` naming the key and where it came from (the file and table, or the flag). Ints are not bools,
lists are lists of strings (not a string), strings are not empty.

`OUTPUT_KEYS` lists the settings that change what a conversion writes. Resume compares them with the
ones a run started with and refuses to mix two settings in one dataset.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from dalle3_etl.settingrules import SettingsError, _coerce, _setting, _specs, _validate

LIST_FIELDS = ("short_caption2", "long_caption2")
#: What pyarrow's parquet writer accepts (checked against pyarrow by tests/e2e/test_hostile_settings.py).
PARQUET_CODECS = ("none", "snappy", "gzip", "brotli", "lz4", "lz4_raw", "zstd")
#: SimpleTuner's `resolution_type` values.
RESOLUTION_TYPES = ("area", "pixel", "pixel_area")
#: SimpleTuner's `crop_style` and `crop_aspect` values.
CROP_STYLES = ("random", "center", "corner", "face")
CROP_ASPECTS = ("square", "preserve", "random", "closest")
#: What `--also` writes besides the SimpleTuner dataset: "imagefolder" is OUT/data/metadata.jsonl (Hugging Face).
ALSO_KINDS = ("imagefolder",)
#: The columns of OUT/data/metadata.jsonl before the `--fields` ones.
IMAGEFOLDER_COLUMNS = ("file_name", "text", "width", "height")
#: The column `datasets`' imagefolder loader makes from `file_name` (so no metadata column may have that name).
IMAGEFOLDER_IMAGE = "image"
#: How an extracted folder's images reach OUT/data: hard links (a copy where OUT is on another file system), copies,
#: symlinks to the input files, or not at all ("none": SimpleTuner reads them in the input folder).
LINK_MODES = ("hard", "copy", "symlink", "none")
_NAME = (
    r"(?!\.\.?$)[^/\\\x00-\x1f\x7f-\x9f]+"  # one path component: no /, \, control characters (C0, DEL, C1); not . or ..
)


#: The parquet columns every conversion writes, in order (`--fields` adds more after them).
BASE_COLUMNS = ("filename", "caption", "width", "height", "key", "shard", "source")
#: With `--extra-captions`: every caption of a row (the first included), after the base columns.
CAPTIONS_COLUMN = "captions"


def _always_written() -> tuple[str, ...]:
    return BASE_COLUMNS


@dataclass(frozen=True)
class SimpleTunerSettings:
    """Values for the generated SimpleTuner dataloader entry (the old recipe's)."""

    id: str = _setting("dalle3", pattern=(_NAME, "a name usable as a folder name (no /, \\ or control characters)"))
    resolution: float = _setting(1.0, above=0)
    maximum_image_size: float = _setting(2.0, above=0)
    minimum_image_size: float = _setting(0.75, min=0)
    target_downsample_size: float = _setting(1.75, above=0)
    resolution_type: str = _setting("area", choices=RESOLUTION_TYPES)
    # Written into the entry only when set (off: SimpleTuner's own default; entries made before stay the same).
    crop: bool = False
    crop_style: str = _setting("", off=True, choices=CROP_STYLES)
    crop_aspect: str = _setting("", off=True, choices=CROP_ASPECTS)
    repeats: int = _setting(0, min=0, max=2**31 - 1)
    cache_dir_vae: str = _setting("", off=True)  # "" = OUT/cache/vae/<id>; relative: under OUT
    cache_dir_text: str = _setting("", off=True)  # "" = OUT/cache/text/<id>; relative: under OUT

    def __post_init__(self) -> None:
        _validate(self)
        _check_units(self)


#: The sizes of the entry, as SimpleTuner's flags name them.
SIZE_KEYS = ("resolution", "maximum_image_size", "target_downsample_size", "minimum_image_size")


def _check_units(st: SimpleTunerSettings) -> None:
    problem = size_unit_problem(st.resolution_type, {name: getattr(st, name) for name in SIZE_KEYS})
    if problem:
        raise SettingsError(problem)


def size_unit_problem(resolution_type: str, values: dict[str, float]) -> str | None:
    """Why the entry's sizes are not in the unit of its `resolution_type` as SimpleTuner's own checks require
    (None when they are): `area` is megapixels (it refuses maximum_image_size or target_downsample_size of 20
    or more, minimum_image_size over 5); `pixel` is pixels (it refuses maximum_image_size or
    target_downsample_size under 512); `pixel_area` takes `resolution` as a pixel edge. A size in the other
    unit would pass here and stop SimpleTuner at start-up. `values`: the sizes the entry has (`SIZE_KEYS`)."""
    values = {n: v for n, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if resolution_type == "area":
        wrong = [n for n, v in values.items() if (v > 5 if n == "minimum_image_size" else v >= 20)]
        if wrong:
            return (
                f"resolution_type area measures sizes in megapixels, but {_named(values, wrong)} look like pixels: "
                "give megapixels (e.g. resolution 1.0, maximum_image_size 2.0) or use resolution_type pixel"
            )
    elif resolution_type == "pixel":
        wrong = [n for n, v in values.items() if (v < 512 if n in SIZE_KEYS[1:3] else 0 < v <= 10)]
        if wrong:
            return (
                f"resolution_type pixel measures sizes in pixels, but {_named(values, wrong)} are not: give "
                "pixels, e.g. --resolution 1024 --maximum-image-size 1536 --target-downsample-size 1280 "
                "--minimum-image-size 768 (SimpleTuner wants maximum_image_size and target_downsample_size >= 512)"
            )
    elif resolution_type == "pixel_area" and values.get("resolution", 11) <= 10:
        return f"resolution_type pixel_area takes resolution as a pixel edge (e.g. 1024), not {values['resolution']:g}"
    return None


def _named(values: dict[str, float], names: list[str]) -> str:
    return ", ".join(f"{name} {values[name]:g}" for name in names)


@dataclass(frozen=True)
class Settings:
    caption_field: str = "short_caption"
    caption_fallbacks: tuple[str, ...] = _setting(
        ("long_caption", "short_caption2", "long_caption2", "original_prompt"), unique="dedupe"
    )
    fields: tuple[str, ...] = _setting((), unique="refuse", reserved=_always_written)
    images: bool = True
    captions: bool = True
    flat: bool = False
    workers: int = _setting(0, min=0)
    # A plain tar of 1.5x this or more is converted as tasks of about this many bytes (run/tasks.py); output unchanged.
    task_bytes: int = _setting(1 << 30, min=1)
    batch_rows: int = _setting(8192, min=1)
    row_group_rows: int = _setting(65536, min=1)
    compression: str = _setting("zstd", choices=PARQUET_CODECS, lower=True)
    max_json_bytes: int = _setting(1 << 20, min=2)  # "{}"
    max_pending: int = _setting(10_000, min=1)
    max_dimension: int = _setting(65535, min=1, max=2**31 - 1)  # width/height are int32 columns
    parquet_name: str = _setting(
        "dalle3.parquet", pattern=(_NAME + r"\.parquet", "a plain file name ending in .parquet")
    )
    # Shaping (shard/shape.py): filters decided on the JSON and the header's size; 0 / () = off.
    min_side: int = _setting(0, min=0, max=2**31 - 1, pinned="when_set")  # shorter side, px
    max_aspect: float = _setting(0.0, off_or_min=1, pinned="when_set")  # longer side / shorter side
    sources: tuple[str, ...] = _setting((), unique="dedupe", pinned="when_set")  # keep only these `source`s
    exclude_sources: tuple[str, ...] = _setting((), unique="dedupe", pinned="when_set")
    min_caption_chars: int = _setting(0, min=0, pinned="when_set")  # on the cleaned caption
    extra_captions: tuple[str, ...] = _setting((), unique="dedupe", pinned="when_set")  # more captions per image
    dedup: str = _setting(
        "", off=True, pinned="when_set"
    )  # JSON field holding a hash: later samples with the same value are dropped
    also: tuple[str, ...] = _setting((), unique="dedupe", choices=ALSO_KINDS, pinned="when_set")
    webshart: bool = _setting(False, pinned="when_set")  # index the tars for SimpleTuner's webshart backend
    # JSON fields giving the stored image's width and height (not img2dataset's original_*); else the header
    size_fields: tuple[str, ...] = _setting(("width", "height"), unique="refuse", pinned="when_set")
    # An extracted folder (sources/folder.py): how its images reach OUT/data, and samples per unit.
    link: str = _setting("hard", choices=LINK_MODES, pinned="when_set")
    unit_samples: int = _setting(10_000, min=1, pinned="when_set")
    captions_in_place: bool = _setting(False, pinned="when_set")  # --link none: <stem>.txt beside each input image
    simpletuner: SimpleTunerSettings = field(default_factory=SimpleTunerSettings)

    def __post_init__(self) -> None:
        _validate(self)
        _check_webshart(self)
        _check_also(self)
        if self.extra_captions and CAPTIONS_COLUMN in self.fields:
            raise SettingsError(
                f"fields: {CAPTIONS_COLUMN!r} is the column --extra-captions writes; it cannot be copied as a field too"
            )
        _refuse_dedup_flat(self)
        _check_text_members(self)
        _check_link_none(self)

    @cached_property  # extensions of the text members the caption settings name (see TEXT_MEMBER_RULE)
    def text_exts(self) -> frozenset[str]:
        return frozenset(n[1:] for n in (*self.caption_chain, *self.extra_captions) if n.startswith("."))

    @cached_property  # read once per JSON member: computed once (a frozen dataclass still has a __dict__)
    def caption_chain(self) -> tuple[str, ...]:
        return (self.caption_field, *[f for f in self.caption_fallbacks if f != self.caption_field])

    def output_fingerprint(self, *, every: bool = False) -> dict[str, Any]:
        """The settings that change the output, as plain JSON-able values (pinned in OUT's manifest). A
        setting pinned only "when_set" is left out while it has its default (`every`: put in all the same)."""
        out = {}
        specs = _specs(Settings)
        for key in OUTPUT_KEYS:
            value = getattr(self, key)
            if not every and specs[key][1].get("pinned") == "when_set" and value == _DEFAULTS[key]:
                continue  # off: the fingerprint is the one of a version without this setting
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


OUTPUT_KEYS = (
    "caption_field",
    "caption_fallbacks",
    "fields",
    "images",
    "captions",
    "flat",
    "row_group_rows",
    "compression",
    "max_json_bytes",
    "max_pending",
    "max_dimension",
    "parquet_name",
    "min_side",
    "max_aspect",
    "sources",
    "exclude_sources",
    "min_caption_chars",
    "extra_captions",
    "dedup",
    "also",
    "webshart",
    "size_fields",
    "link",
    "unit_samples",
    "captions_in_place",
)
_DEFAULTS = {f.name: f.default for f in fields(Settings)}


#: How a caption setting names a text member of the sample instead of a JSON field (README says the same).
TEXT_MEMBER_RULE = (
    "a name starting with a dot ('.txt', '.caption') is the sample's member with that extension, read as UTF-8 "
    "text; 'txt' alone means '.txt'; any other name is a JSON field"
)
_EXT = re.compile(r"\.[a-z0-9_]{1,16}")
#: Extensions that are an image or the JSON member (the same as shard.samples' sets; a test holds them equal).
SAMPLE_EXTENSIONS = frozenset({"json", "jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"})


def _text_name(name: str, key: str) -> str:
    """A caption setting's name with `txt` spelled `.txt` and an extension lower-cased; refuses a bad one."""
    if name == "txt":
        return ".txt"
    if not name.startswith("."):
        return name
    low = name.lower()
    if not _EXT.fullmatch(low) or low[1:] in SAMPLE_EXTENSIONS:
        raise SettingsError(
            f"{key}: {name!r} is not a usable text member: {TEXT_MEMBER_RULE} (1-16 letters, digits or _, "
            f"not json or an image extension)"
        )
    return low


def _check_text_members(settings: Settings) -> None:
    """Caption names: `txt` -> `.txt`, `.TXT` -> `.txt`, a bad `.x` refused; repeats (after that) dropped."""
    field = _text_name(settings.caption_field, "caption_field")
    chain = tuple(dict.fromkeys(_text_name(n, "caption_fallbacks") for n in settings.caption_fallbacks))
    extra = tuple(dict.fromkeys(_text_name(n, "extra_captions") for n in settings.extra_captions))
    object.__setattr__(settings, "caption_field", field)
    object.__setattr__(settings, "caption_fallbacks", chain)
    object.__setattr__(settings, "extra_captions", extra)
    if len(settings.size_fields) != 2:
        raise SettingsError(
            f"size_fields: {','.join(settings.size_fields)!r}: give two JSON fields, width then height "
            f"(e.g. img_w,img_h)"
        )


def _refuse_dedup_flat(settings: Settings) -> None:
    """--flat publishes each shard's files for good at merge time, --dedup may take a published file back
    when a shard sorting first is added later: the two are not combined."""
    if settings.dedup and settings.flat:
        raise SettingsError(
            f"dedup = {settings.dedup!r} (--dedup) cannot be combined with flat = true (--flat): "
            "duplicates are removed from OUT/data/<shard>/ folders only; drop one of the two"
        )


def _check_link_none(settings: Settings) -> None:
    """link = "none" leaves the images in the input folder (store.inplace): nothing is published in OUT/data, so
    the options that arrange files there are refused; --captions-in-place only goes with it."""
    if settings.link != "none":
        if settings.captions_in_place:
            raise SettingsError("captions_in_place (--captions-in-place) needs link = none (--link none)")
        return
    for key, flag in (("flat", "--flat"), ("dedup", "--dedup"), ("also", "--also"), ("webshart", "--webshart")):
        if getattr(settings, key):
            raise SettingsError(f"link = none (--link none) writes nothing in OUT/data: leave out {flag}")
    if settings.captions_in_place and "txt" in settings.text_exts:
        raise SettingsError("captions_in_place (--captions-in-place) would write the .txt files read as captions")


def _check_webshart(settings: Settings) -> None:
    """--webshart trains from the tars themselves: nothing is written into OUT/data."""
    if not settings.webshart:
        return
    for key, flag in (("images", "--images"), ("captions", "--captions"), ("flat", "--flat")):
        if getattr(settings, key):
            raise SettingsError(f"webshart = true (--webshart) reads images from the tars: leave out {flag}")
    if settings.also:
        raise SettingsError("webshart = true (--webshart) writes no OUT/data for an imagefolder: leave out --also")
    taken = [f for f in settings.fields if f in ("_offset", "_length")]  # the part's hidden columns (shard.sinks)
    if taken:
        raise SettingsError(f"fields: {taken[0]!r} is a column --webshart keeps for itself; it cannot be copied too")


def _check_also(settings: Settings) -> None:
    """`also = ["imagefolder"]` lists the images in OUT/data: they must be there, and no field may take a
    column name metadata.jsonl already has."""
    if "imagefolder" not in settings.also:
        return
    if not settings.images:
        raise SettingsError("also = imagefolder (--also) needs the images in OUT/data: leave out --no-images")
    taken = [f for f in settings.fields if f in IMAGEFOLDER_COLUMNS]
    if taken:
        raise SettingsError(f"fields: {taken[0]!r} is a column of the imagefolder metadata.jsonl (--also imagefolder)")
    if IMAGEFOLDER_IMAGE in settings.fields:  # a metadata column of that name replaces the loader's images
        raise SettingsError(
            f"fields: {IMAGEFOLDER_IMAGE!r} is the column Hugging Face's imagefolder loader puts the images in "
            "(--also imagefolder); a field of that name would replace them"
        )


def _read_toml(config: Path) -> dict[str, Any]:
    try:
        text = Path(config).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise SettingsError(f"config file not found: {config}") from None
    except IsADirectoryError:
        raise SettingsError(f"config {config} is a directory, not a TOML file") from None
    except OSError as exc:
        raise SettingsError(f"config {config} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SettingsError(f"config {config} is not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{config}: invalid TOML: {exc}") from None


def _read_tables(config: Path) -> dict[str, Any]:
    """A config file's tables: [convert] and [simpletuner], nothing else."""
    data = _read_toml(config)
    unknown = set(data) - {"convert", "simpletuner"}
    if unknown:
        raise SettingsError(f"{config}: unknown table(s) {sorted(unknown)}; use [convert] and [simpletuner]")
    for table in ("convert", "simpletuner"):
        if not isinstance(data.get(table, {}), dict):
            raise SettingsError(f"{config}: {table} must be a [{table}] table, not a value")
    return data


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Defaults, then the TOML file's `[convert]` and `[simpletuner]` tables, then non-None overrides (flags)."""
    base: dict[str, Any] = {}
    st: dict[str, Any] = {}
    if config is not None:
        data = _read_tables(config)
        convert = data.get("convert", {})
        if "simpletuner" in convert:
            raise SettingsError(f"{config}: [convert] simpletuner: put these values in a [simpletuner] table")
        base = _coerce(Settings, convert, f"{config}: [convert] ")
        st = _coerce(SimpleTunerSettings, data.get("simpletuner", {}), f"{config}: [simpletuner] ")
    base.update(_coerce(Settings, {k: v for k, v in overrides.items() if v is not None}, flags=True))
    if base.get("webshart"):  # no files in OUT/data unless asked for (then refused, naming the flag)
        base.setdefault("images", False)
        base.setdefault("captions", False)
    return Settings(simpletuner=SimpleTunerSettings(**st), **base)


def simpletuner_values(
    current: dict[str, Any], where: str, config: Path | None = None, **overrides: Any
) -> SimpleTunerSettings:
    """SimpleTuner settings from `current` (values read from `where`, e.g. an existing entry), then the
    `[simpletuner]` table of `config` (a `[convert]` table there is allowed and left alone), then non-None
    overrides (flags). Every value is checked like the others; an unknown key is refused."""
    values = _coerce(SimpleTunerSettings, current, where)
    if config is not None:
        table = _read_tables(config).get("simpletuner", {})
        values.update(_coerce(SimpleTunerSettings, table, f"{config}: [simpletuner] "))
    flags = {k: v for k, v in overrides.items() if v is not None}
    values.update(_coerce(SimpleTunerSettings, flags, flags=True))
    return SimpleTunerSettings(**values)


def as_toml_dict(settings: Settings) -> dict[str, Any]:
    data = dataclasses.asdict(settings)
    return {"simpletuner": data.pop("simpletuner"), "convert": data}


__all__ = ["Settings", "SimpleTunerSettings", "SettingsError", "load_settings", "OUTPUT_KEYS", "replace"]
