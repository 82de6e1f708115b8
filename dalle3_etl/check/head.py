"""`dalle3-etl head OUT`: the first rows of a converted output's parquet, fitted to the terminal (command in `cli`).

Reads only the first batch of the parquet the dataloader entry names (else where convert writes it).
"""

from __future__ import annotations

from pathlib import Path

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from dalle3_etl.check.target import open_output
from dalle3_etl.safetext import plain, safe
from dalle3_etl.settings import CAPTIONS_COLUMN

HEAD_MIN_CAPTION = 20  # cells; below this, head drops the shard and source columns


def head_table(out: Path, rows: int, width: int) -> Table:
    """The first rows in a table `width` cells wide: every column at full width but the caption, which is
    cut to what is left (shard and source, which the filename repeats or can spare, go first when narrow)."""
    target, pf = open_output(out)
    batch = next(pf.iter_batches(batch_size=rows), None)
    names = [n for n in pf.schema_arrow.names if n != "key"]
    cells = {
        name: [plain(" ".join(str(v).split())) if v is not None else "" for v in batch.column(name).to_pylist()]
        if batch is not None
        else []
        for name in names
    }
    caption_name = target.caption
    if CAPTIONS_COLUMN in cells:  # --extra-captions: how many captions each row has; the first is `caption`
        cells[CAPTIONS_COLUMN] = [str(len(v)) for v in batch.column(CAPTIONS_COLUMN).to_pylist()]
        caption_name = "caption" if caption_name == CAPTIONS_COLUMN else caption_name
    caption = cells.pop(caption_name, None)
    widths = {name: max([cell_len(plain(name)), *map(cell_len, values)]) for name, values in cells.items()}
    for optional in ("shard", "source"):
        if _caption_room(widths, width) < HEAD_MIN_CAPTION and optional in widths:
            del widths[optional]
    table = Table(title=safe(f"{target.parquet} ({pf.metadata.num_rows:,} rows)"), title_justify="left")
    for name in widths:
        table.add_column(safe(name), no_wrap=True, justify="right" if name in (target.width, target.height) else "left")
    columns = [cells[name] for name in widths]
    if caption is not None:
        table.add_column(safe(caption_name), no_wrap=True)
        room = max(_caption_room(widths, width), HEAD_MIN_CAPTION)
        columns.append([_shorten(c, room) for c in caption])
    for values in zip(*columns):
        table.add_row(*(Text(v) for v in values))
    return table


def _caption_room(widths: dict[str, int], total: int) -> int:
    """Cells left for the caption once the other columns, their padding and the borders are drawn."""
    return total - sum(widths.values()) - 3 * (len(widths) + 1) - 1


def _shorten(text: str, width: int) -> str:
    if cell_len(text) <= width:
        return text
    cut = Text(text)
    cut.truncate(width, overflow="ellipsis")
    return cut.plain


__all__ = ["head_table"]
