"""Text for people on the terminal: untrusted text shown safely, byte counts made readable.

Untrusted text: paths, shard and member names, error messages that quote them.

Such text may hold rich markup (``x[/]y.jpg``, ``data-[red]1.tar``), emoji codes (``:fire:``) and terminal
control characters (ESC, BEL, CR, C1 codes) that would restyle, crash or rewrite the output. `safe` turns a value
into a rich `Text`, which rich prints as it is: never parsed as markup or emoji. `plain` is the string underneath,
also used where text goes out without rich: control characters are shown as ``\\xNN`` instead of being sent,
and so are bytes that are not UTF-8 (a file name read with surrogateescape), which would fail to print.
Tab and newline are kept: messages may span lines.
"""

from __future__ import annotations

import re

from rich.text import Text

_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _show(match: re.Match) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, decoded with surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def plain(value: object) -> str:
    """`str(value)` with control characters and undecodable bytes written as visible escapes."""
    return _UNPRINTABLE.sub(_show, str(value))


def safe(value: object, style: str = "") -> Text:
    """`value` as rich Text: printed literally ([brackets], :codes:), controls made visible (see `plain`)."""
    return Text(plain(value), style=style)


def human_bytes(n: float) -> str:
    """A byte count for people: ``1234567`` -> ``1.23 MB`` (powers of 1000, up to TB)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


__all__ = ["plain", "safe", "human_bytes"]
