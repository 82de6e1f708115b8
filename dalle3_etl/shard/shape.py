"""Which samples a run keeps: the filters of `--min-side`, `--max-aspect`, `--sources`, `--exclude-sources` and
`--min-caption-chars`, decided on the sample's JSON and its size (from the JSON or the image header) only.

`SampleWriter.finish` asks `Filters.check` once the size and the caption are known and before any file of the
sample is written, so a filtered image is never written to the output. The filters are checked in the order of
`FILTERS` and the first that fails is reported: a `filtered` reject whose detail starts with the filter's name
(`min_side: 816 < 1024`), counted in the shard's notes as `filtered_<name>`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dalle3_etl.settings import Settings
from dalle3_etl.shard.rows import JsonInfo, Reason, Reject

#: Every filter, in the order they are checked (the first that fails names the reject).
FILTERS = ("min_side", "max_aspect", "sources", "exclude_sources", "min_caption_chars")
#: Notes key prefix: a shard's notes count its filtered samples as `filtered_<filter>`.
NOTE_PREFIX = "filtered_"


@dataclass(frozen=True, slots=True)
class Filters:
    """The filters of a run (0 or () = off)."""

    min_side: int = 0
    max_aspect: float = 0.0
    sources: tuple[str, ...] = ()
    exclude_sources: tuple[str, ...] = ()
    min_caption_chars: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Filters:
        return cls(*(getattr(settings, name) for name in FILTERS))

    @property
    def active(self) -> bool:
        return any(getattr(self, name) for name in FILTERS)

    def check(self, info: JsonInfo, width: int, height: int) -> Reject | None:
        """The `filtered` reject of the first filter the sample fails, or None when it is kept."""
        detail = self._failed(info, width, height)
        return None if detail is None else Reject(Reason.FILTERED, detail)

    def _failed(self, info: JsonInfo, width: int, height: int) -> str | None:
        shorter, longer = min(width, height), max(width, height)
        if self.min_side and shorter < self.min_side:
            return f"min_side: {shorter} < {self.min_side} ({width}x{height})"
        if self.max_aspect and longer / shorter > self.max_aspect:
            return f"max_aspect: {_ratio(longer / shorter, self.max_aspect)} > {self.max_aspect!r} ({width}x{height})"
        source = info.source
        if self.sources and source not in self.sources:
            if source is None:
                return f"sources: no source (keeping only {list(self.sources)})"
            return f"sources: {source!r} not in {list(self.sources)}"
        if self.exclude_sources and source in self.exclude_sources:
            return f"exclude_sources: {source!r}"
        if self.min_caption_chars and len(info.caption) < self.min_caption_chars:
            return f"min_caption_chars: {len(info.caption)} < {self.min_caption_chars}"
        return None


def _ratio(value: float, limit: float) -> str:
    """`value` with 2 decimals, or as many more as it takes not to look equal to `limit` (2.0001 > 2)."""
    for digits in range(2, 10):
        text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
        if float(text) > limit:
            return text
    return repr(value)


def filter_of(detail: str) -> str | None:
    """The filter a `filtered` reject's detail names (None for a detail that does not start with one)."""
    name = detail.partition(":")[0]
    return name if name in FILTERS else None


def filtered_notes(notes: dict[str, int]) -> dict[str, int]:
    """Filtered samples by filter, from a shard's (or a run's) notes; filters that removed nothing left out."""
    return {name: notes[NOTE_PREFIX + name] for name in FILTERS if notes.get(NOTE_PREFIX + name)}


__all__ = ["FILTERS", "NOTE_PREFIX", "Filters", "filter_of", "filtered_notes"]
