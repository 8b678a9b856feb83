"""Tables and sections laid out line by line, so that the height of every section is known
before rendering (which `rich.table.Table` does not offer).

`table(columns, width, row_styles)` fits columns into a width; decisions of this module, where the
screen is too narrow: each column has a priority and a comfortable width (its content, capped).
Columns are taken in priority order at that width while they fit; the first that does not is
taken at its minimum width if that fits, and the rest are dropped. Then the kept ones grow to
their content in priority order, and the flexible one takes what is left. Cells are cut with an
ellipsis; a cell with a compact form too narrow for its full form shows the compact one.

A `Section` is a heading rule, an optional header row and its rows; `Section.lines(height, width)`
never returns more than `height` lines, and a truncated list ends (or, for a feed that keeps its
newest rows, starts) with "… N more". Knows nothing of what the columns hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rich.cells import cell_len
from rich.text import Text

from swarmlet.dashboard.cells import clean, fit, one_line, styled

# ---------------------------------------------------------------------------- columns


@dataclass
class Column:
    header: str
    cells: list[Text]
    priority: int  # 0 is kept longest
    min_width: int = 4  # the narrowest it is shown at, when it is the last column that fits
    max_width: int = 40  # its natural width never exceeds this
    comfort: int = 0  # the width it is chosen at (0: its natural width); grows from there
    justify: str = "left"
    flex: bool = False  # takes the width left over, up to its content
    compact: list[Text] | None = None  # shown instead of a cell that does not fit
    header_style: str = "bold"

    def natural(self) -> int:
        widest = max((c.cell_len for c in self.cells), default=0)
        return min(max(cell_len(self.header), widest), self.max_width)


def table(
    columns: Sequence[Column], width: int, row_styles: Sequence[str]
) -> tuple[Text, list[Text]]:
    """A header line and one line per row, each at most `width` cells."""
    if not columns:
        return one_line([]), [one_line([]) for _ in row_styles]
    gap = 2 if width >= 60 else 1
    natural = [c.natural() for c in columns]
    widths = [0] * len(columns)
    chosen: list[int] = []
    used = 0
    for i in sorted(range(len(columns)), key=lambda i: columns[i].priority):
        column = columns[i]
        spacing = gap if chosen else 0
        comfortable = max(1, min(natural[i], column.comfort or natural[i]))
        squeezed = max(1, min(natural[i], column.min_width))
        if used + spacing + comfortable <= width:
            widths[i] = comfortable
        elif used + spacing + squeezed <= width:
            widths[i] = squeezed  # the last column that fits: the screen is full
        elif not chosen:
            widths[i], spacing = max(0, width), 0
        else:
            break
        chosen.append(i)
        used += spacing + widths[i]
        if widths[i] < comfortable:
            break
    left = max(0, width - used)
    for flex in (False, True):
        for i in sorted(chosen, key=lambda i: columns[i].priority):
            if columns[i].flex is flex:
                grow = min(left, natural[i] - widths[i]) if natural[i] > widths[i] else 0
                widths[i] += grow
                left -= grow
    shown = sorted(chosen)
    sep = Text(" " * gap)

    def join(cells: list[Text], style: str) -> Text:
        parts: list[Text] = []
        for n, cell in enumerate(cells):
            if n:
                parts.append(sep)
            parts.append(cell)
        return one_line(parts, style)

    header = join(
        [
            fit(
                Text(columns[i].header, style=columns[i].header_style),
                widths[i],
                columns[i].justify,
            )
            for i in shown
        ],
        "",
    )
    rows = []
    for r, style in enumerate(row_styles):
        cells = []
        for i in shown:
            c = columns[i]
            cell = c.cells[r] if r < len(c.cells) else Text("")
            if c.compact is not None and cell.cell_len > widths[i] and r < len(c.compact):
                cell = c.compact[r]
            cells.append(fit(cell, widths[i], c.justify))
        rows.append(join(cells, style))
    return header, rows


# ---------------------------------------------------------------------------- sections


@dataclass
class Section:
    title: str
    info: str
    header: Text | None
    rows: list[Text]
    min_rows: int
    tail: bool = False  # keep the last rows (a feed), not the first
    empty: str = ""  # the row shown when there are none
    more: Callable[[int], str] = field(default=lambda n: f"… {n} more")

    @property
    def overhead(self) -> int:
        return 1 + (1 if self.header is not None else 0)

    def wanted(self) -> int:
        return self.overhead + max(1, len(self.rows))

    def _note(self, hidden: int, width: int) -> Text:
        return one_line([fit(styled(self.more(hidden), "dim"), width)])

    def lines(self, height: int, width: int) -> list[Text]:
        out = [heading(self.title, self.info, width)]
        if self.header is not None:
            out.append(self.header)
        room = max(0, height - len(out))
        rows = self.rows or [one_line([fit(styled(self.empty, "dim italic"), width)])]
        if len(rows) <= room:
            out.extend(rows)
        elif room == 1:
            out.append(self._note(len(rows), width))
        elif room > 1:
            keep = room - 1
            note = self._note(len(rows) - keep, width)
            out.extend([note, *rows[-keep:]] if self.tail else [*rows[:keep], note])
        return out[:height]


def heading(title: str, info: str, width: int) -> Text:
    text = Text("── ", style="dim")
    text.append(clean(title), style="bold")
    if info:
        text.append(" · " + clean(info), style="")
    text.append(" ")
    text.append("─" * max(0, width - text.cell_len), style="dim")
    return one_line([fit(text, width)])
