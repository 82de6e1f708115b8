"""How a setting is declared (`_setting`: a dataclass field and its rules) and checked (`_coerce`, `_validate`):
the type and limits of every value, from a TOML file, a flag, or code. `settings` declares the fields; this
module knows nothing of what they mean."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import field, fields
from functools import cache
from typing import Any, get_origin, get_type_hints

from dalle3_etl.errors import UsageError


class SettingsError(UsageError, ValueError):
    """A config file or flag value that cannot be used."""


def _setting(default: Any, **rules: Any) -> Any:
    """A dataclass field and what `_check` requires of its value beyond its type:
    min / max / above (number >= / <= / >), choices (str, one of them), lower (str, lower-cased first),
    pattern ((regex, what it means)), unique ("refuse" or "dedupe" a list's repeated items),
    reserved (a function giving names a list must not hold), off_or_min (a number: 0 for off, else at least
    this), pinned ("when_set": in the output fingerprint only when not the default, so an output made before
    the setting existed resumes unchanged), off ("" is allowed: the option is off)."""
    return field(default=default, metadata=rules)


class _Bad(ValueError):
    """What is wrong with one value (the caller says where it came from)."""


_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


@cache
def _specs(cls: type) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Field name -> (type, rules) of a settings dataclass."""
    hints = get_type_hints(cls)
    return {f.name: (hints[f.name], dict(f.metadata)) for f in fields(cls)}


def _check(kind: Any, rules: dict[str, Any], value: Any) -> Any:
    """`value` checked against the field type `kind` and its `rules`; returned normalised (list -> tuple,
    int -> float where a float is wanted, lower-cased, de-duplicated). Raises `_Bad`."""
    if get_origin(kind) is tuple:  # tuple[str, ...]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise _Bad("expected a list of non-empty strings")
        value = tuple(value)
        repeated = [v for i, v in enumerate(value) if v in value[:i]]
        if repeated and rules.get("unique") == "refuse":
            raise _Bad(f"{repeated[0]!r} is listed twice")
        value = tuple(dict.fromkeys(value))
        unknown = [v for v in value if v not in rules["choices"]] if "choices" in rules else []
        if unknown:
            raise _Bad(f"{unknown[0]!r}: must be one of {', '.join(rules['choices'])}")
        taken = [v for v in value if v in rules["reserved"]()] if value and "reserved" in rules else []
        if taken:
            raise _Bad(f"{taken[0]!r}: that column is always written")
        return value
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, kind):
            raise _Bad(f"expected {kind.__name__}")
        return value
    wanted = (int, float) if kind is float else kind  # a number setting takes a whole number (1 -> 1.0)
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, wanted):  # a bool is an int in Python
        raise _Bad(f"expected {_KINDS[kind]}")
    if kind is float and not math.isfinite(value):
        raise _Bad(f"expected {_KINDS[kind]}, not {value}")
    if kind is float:
        value = float(value)
    if kind is str:
        value = value.lower() if rules.get("lower") else value
        if not value and rules.get("off"):
            return value
        if not value:
            raise _Bad("must not be empty")
        if "choices" in rules and value not in rules["choices"]:
            raise _Bad(f"must be one of {', '.join(rules['choices'])}")
        if "pattern" in rules and not re.fullmatch(rules["pattern"][0], value):
            raise _Bad(f"must be {rules['pattern'][1]}")
        return value
    if "min" in rules and value < rules["min"]:
        raise _Bad(f"must be at least {rules['min']}")
    if "max" in rules and value > rules["max"]:
        raise _Bad(f"must be at most {rules['max']}")
    if "above" in rules and value <= rules["above"]:
        raise _Bad(f"must be more than {rules['above']}")
    if "off_or_min" in rules and value != 0 and value < rules["off_or_min"]:
        raise _Bad(f"must be 0 (off) or at least {rules['off_or_min']}")
    return value


def _shown(value: Any, flag: bool) -> str:
    """A value as the user wrote it: a flag's comma list, else TOML-like; long values cut."""
    if flag:
        text = (",".join(value) if isinstance(value, tuple) else str(value)) or '""'
    else:
        text = json.dumps(list(value) if isinstance(value, tuple) else value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _coerce(cls: type, data: dict[str, Any], where: str = "", flags: bool = False) -> dict[str, Any]:
    """Check every value of `data` for the fields of `cls` (see `_check`). `where` starts each message
    (a file and table); with `flags`, keys are named as the command-line flags that gave them."""
    specs = _specs(cls)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in specs:
            raise SettingsError(f"{where}unknown setting {key!r} (known: {', '.join(sorted(specs))})")
        kind, rules = specs[key]
        try:
            out[key] = _check(kind, rules, value)
        except _Bad as exc:
            name = f"--{key.replace('_', '-')} " if flags else f"{key} = "
            raise SettingsError(f"{where}{name}{_shown(value, flags)}: {exc}") from None
    return out


def _validate(obj: Any) -> None:
    """Check a settings object built in code (load_settings has checked file and flags, naming them) and
    store the normalised values."""
    for key, value in _coerce(type(obj), {f.name: getattr(obj, f.name) for f in fields(obj)}).items():
        object.__setattr__(obj, key, value)
