"""One frozen settings object for a run: defaults here and in config/default.toml, overridden by flags.

`OUTPUT_KEYS` lists the settings that change what a conversion writes. Resume compares them with the
ones a run started with and refuses to mix two settings in one dataset.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "default.toml"

CAPTION_FIELDS = ("short_caption", "long_caption", "short_caption2", "long_caption2", "original_prompt")
LIST_FIELDS = ("short_caption2", "long_caption2")
KNOWN_FIELDS = (
    "image_name", "md5_pil_hash", "md5_file_hash", "sha512_hash", "short_caption", "long_caption",
    "resolution", "url", "width", "height", "source", "original_prompt", "short_caption2", "long_caption2",
)


class SettingsError(ValueError):
    """A config file or flag value that cannot be used."""


@dataclass(frozen=True)
class SimpleTunerSettings:
    """Values for the generated SimpleTuner dataloader entry (the old recipe's)."""

    id: str = "dalle3"
    resolution: float = 1.0
    maximum_image_size: float = 2.0
    minimum_image_size: float = 0.75
    target_downsample_size: float = 1.75
    resolution_type: str = "area"


@dataclass(frozen=True)
class Settings:
    caption_field: str = "short_caption"
    caption_fallbacks: tuple[str, ...] = ("long_caption", "short_caption2", "long_caption2", "original_prompt")
    fields: tuple[str, ...] = ()
    images: bool = True
    captions: bool = True
    flat: bool = False
    workers: int = 0
    batch_rows: int = 8192
    row_group_rows: int = 65536
    compression: str = "zstd"
    max_json_bytes: int = 1 << 20
    max_pending: int = 10_000
    max_dimension: int = 65535
    parquet_name: str = "dalle3.parquet"
    simpletuner: SimpleTunerSettings = field(default_factory=SimpleTunerSettings)

    def __post_init__(self) -> None:
        if not self.caption_field:
            raise SettingsError("caption_field must not be empty")
        if self.batch_rows < 1 or self.row_group_rows < 1:
            raise SettingsError("batch_rows and row_group_rows must be positive")
        if self.max_json_bytes < 2 or self.max_pending < 1 or self.max_dimension < 1:
            raise SettingsError("max_json_bytes, max_pending and max_dimension must be positive")
        if self.workers < 0:
            raise SettingsError("workers must be 0 (all cores) or more")
        if "/" in self.parquet_name or not self.parquet_name.endswith(".parquet"):
            raise SettingsError("parquet_name must be a plain file name ending in .parquet")
        for name in self.fields:
            if name in ("filename", "caption", "width", "height", "key", "shard", "source"):
                raise SettingsError(f"--fields {name}: that column is always written")

    @cached_property  # read once per JSON member: computed once (a frozen dataclass still has a __dict__)
    def caption_chain(self) -> tuple[str, ...]:
        return (self.caption_field, *[f for f in self.caption_fallbacks if f != self.caption_field])

    def output_fingerprint(self) -> dict[str, Any]:
        """The settings that change the output, as plain JSON-able values."""
        out = {}
        for key in OUTPUT_KEYS:
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


OUTPUT_KEYS = (
    "caption_field", "caption_fallbacks", "fields", "images", "captions", "flat",
    "row_group_rows", "compression", "max_json_bytes", "max_pending", "max_dimension", "parquet_name",
)


def _coerce(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    known = {f.name: f for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise SettingsError(f"{where}: unknown setting {key!r} (known: {', '.join(sorted(known))})")
        if isinstance(value, list):
            value = tuple(value)
        out[key] = value
    return out


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Defaults, then the TOML file's `[convert]` and `[simpletuner]` tables, then non-None overrides."""
    base: dict[str, Any] = {}
    st: dict[str, Any] = {}
    if config is not None:
        try:
            data = tomllib.loads(Path(config).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"config file not found: {config}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{config}: invalid TOML: {exc}") from None
        unknown = set(data) - {"convert", "simpletuner"}
        if unknown:
            raise SettingsError(f"{config}: unknown table(s) {sorted(unknown)}; use [convert] and [simpletuner]")
        base = _coerce(Settings, data.get("convert", {}), str(config))
        base.pop("simpletuner", None)
        st = _coerce(SimpleTunerSettings, data.get("simpletuner", {}), f"{config} [simpletuner]")
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(simpletuner=SimpleTunerSettings(**st), **base)
    except TypeError as exc:
        raise SettingsError(str(exc)) from None


def as_toml_dict(settings: Settings) -> dict[str, Any]:
    data = dataclasses.asdict(settings)
    return {"simpletuner": data.pop("simpletuner"), "convert": data}


__all__ = ["Settings", "SimpleTunerSettings", "SettingsError", "load_settings", "OUTPUT_KEYS", "replace"]
