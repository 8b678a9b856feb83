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

A long list is built only where the screen can show it (`visible_range`): a screen `height` high
shows at most `height` rows, around the selection, at the top, or (a feed) at the bottom, so
the rows beyond are only counted (`hidden_above`, `hidden_below`). That keeps a redraw of a
1,000-task cluster in milliseconds; the columns' widths then fit the rows that can be seen.
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


def visible_range(count: int, selected: int | None, height: int, tail: bool = False) -> range:
    """The rows of a `count`-row list worth building for a screen `height` high: all of a
    short list; else `height` rows either side of the selection, or the first (a feed: the
    last) `height` rows."""
    height = max(1, height)
    if count <= height:
        return range(count)
    if selected is not None and 0 <= selected < count:
        return range(max(0, selected - height), min(count, selected + height + 1))
    return range(count - height, count) if tail else range(height)


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
    selected: int | None = None  # a row to show highlighted, whatever the height (in the whole
    # list: `hidden_above` counts)
    focused: bool = False  # the pane the keys act on: its heading says so
    hidden_above: int = 0  # rows of the list before `rows`, not built (see `visible_range`)
    hidden_below: int = 0  # and after them

    @property
    def count(self) -> int:
        """The rows of the whole list."""
        return self.hidden_above + len(self.rows) + self.hidden_below

    @property
    def overhead(self) -> int:
        return 1 + (1 if self.header is not None else 0)

    def wanted(self) -> int:
        return self.overhead + max(1, self.count)

    def lines(self, height: int, width: int) -> list[Text]:
        """At most `height` lines. A focused section has a one-cell gutter that marks the
        selected row with ▶ (readable without colour): its rows are built `width - 1` wide."""
        return [line for line, _ in self.lines_and_rows(height, width)]

    def lines_and_rows(self, height: int, width: int) -> list[tuple[Text, int | None]]:
        """`lines`, each with the index (in the whole list) of the row it shows, None for the
        heading, the header and the notes: what a mouse click on that line selects."""
        gutter = 1 if self.focused and width > 1 else 0
        inner = width - gutter
        header = [self.header] if self.header is not None else []
        room = max(0, height - 1 - len(header))
        count = self.count
        first, last = self.hidden_above, self.hidden_above + len(self.rows)
        sel = self.selected if self.selected is not None and first <= self.selected < last else None
        plan: list[int | str] = []  # row indices, or the text of a note
        if count == 0:
            plan = [self.empty] if room else []
        elif count <= room:
            plan = list(range(count))
        elif room == 1:
            plan = [sel if sel is not None else self.more(count)]
        elif room > 1:
            plan = self._window(count, room, sel)

        def row(i: int) -> Text:
            if not first <= i < last:
                return one_line([fit(Text(""), inner)])  # not built: never planned in practice
            text = self.rows[i - first]
            if i == sel:
                text = text.copy()
                text.stylize("reverse")
            return text

        body: list[tuple[Text, int | None]] = [(h, None) for h in header]
        for entry in plan:
            if isinstance(entry, int):
                body.append((row(entry), entry))
            else:
                style = "dim italic" if count == 0 else "dim"
                body.append((one_line([fit(styled(entry, style), inner)]), None))
        if gutter:
            body = [
                (
                    one_line(
                        [Text("▶" if i is not None and i == sel else " ", style="bold cyan"), line]
                    ),
                    i,
                )
                for line, i in body
            ]
        out: list[tuple[Text, int | None]] = [
            (heading(self.title, self.info, width, self.focused), None)
        ]
        out.extend(body)
        return out[:height]

    def _window(self, count: int, room: int, sel: int | None) -> list[int | str]:
        """`room` entries of a `count`-row list (count > room): row indices and notes for what
        is hidden; the selected row is always among them."""
        if sel is None:
            keep = room - 1
            note = self.more(count - keep)
            if self.tail:
                return [note, *range(count - keep, count)]
            return [*range(keep), note]
        # The top or bottom of the list if the selection is there, else a window ending at it,
        # with a note for each hidden side.
        if sel < room - 1:
            start, visible = 0, room - 1
        elif sel >= count - (room - 1):
            start, visible = count - (room - 1), room - 1
        elif room >= 3:
            visible = room - 2
            start = sel - visible + 1
        else:
            return [sel]
        out: list[int | str] = []
        if start > 0:
            out.append(f"… {start} above")
        out.extend(range(start, start + visible))
        if start + visible < count:
            out.append(self.more(count - start - visible))
        return out[:room]


def heading(title: str, info: str, width: int, focused: bool = False) -> Text:
    text = Text("━━ ▶ " if focused else "── ", style="bold cyan" if focused else "dim")
    text.append(clean(title), style="bold")
    if info:
        text.append(" · " + clean(info), style="")
    text.append(" ")
    text.append("─" * max(0, width - text.cell_len), style="dim")
    return one_line([fit(text, width)])
