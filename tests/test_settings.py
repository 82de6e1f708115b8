"""One frozen settings object: defaults, config/default.toml, flags."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from dalle3_etl.settings import Settings, SettingsError, as_toml_dict, load_settings

DEFAULT_TOML = Path(__file__).resolve().parent.parent / "config" / "default.toml"


def test_config_default_toml_equals_the_built_in_defaults():
    assert load_settings(DEFAULT_TOML) == Settings()
    data = tomllib.loads(DEFAULT_TOML.read_text())
    expected = as_toml_dict(Settings())
    expected["convert"] = {k: list(v) if isinstance(v, tuple) else v for k, v in expected["convert"].items()}
    assert data == expected


def test_flags_override_the_file_and_settings_are_frozen(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[convert]\ncaption_field = "long_caption"\nworkers = 3\n[simpletuner]\nid = "mine"\n')
    s = load_settings(cfg, workers=5)
    assert (s.caption_field, s.workers, s.simpletuner.id) == ("long_caption", 5, "mine")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.workers = 1


def test_bad_config_is_a_clear_error(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[convert]\ncaption_feld = 1\n")
    with pytest.raises(SettingsError, match="unknown setting 'caption_feld'"):
        load_settings(cfg)
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "missing.toml")
    with pytest.raises(SettingsError, match="always written"):
        load_settings(None, fields=("caption",))


def test_output_fingerprint_ignores_worker_count():
    assert Settings(workers=1).output_fingerprint() == Settings(workers=8).output_fingerprint()
    assert Settings(images=False).output_fingerprint() != Settings().output_fingerprint()
