"""Where a command's output goes: plain text written as it is, rich loaded only for what needs it.

Every command prints through an `Output`: text (`line`, `write`), JSON (`json`), tables
(`table`). Importing rich.console costs more than everything else a quick command does, so what
goes to a script (not a terminal) is written directly, and rich's Console (`rich`) is created
only for what needs it: colours and highlighted JSON on a terminal, and the tables that only
rich can lay out (wider than the page, or with cells that are not plain ASCII). Tests inject a
Console (`cli.main.main(argv, console)`); then everything goes through that one, so they
capture it all.

What reaches standard output is what rich prints to a file, character for character (tests hold
the two equal): text is not wrapped (scripts parse whole lines), the control characters that
move the cursor are dropped and tabs are expanded; a table is rich's borderless table, columns
two spaces apart, cells padded to their column's width. Data is never read as rich markup or
emoji codes: a name, an error message or a JSON document prints as it is. Errors and warnings go
to standard error the same way (`error`).

A list command prints as docker's do (`print_list`): its own table or JSON, IDs alone with `-q`,
or what a docker template renders, written exactly (`raw`: tabs stay tabs, for `cut -f`); the
template engine is loaded only then.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection, Mapping, Sequence

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any, TypeAlias

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from swarmlet.cli.gotemplate import Record

    # A table cell: plain text, or spans of (text, rich style) that a terminal shows styled;
    # the first span's style is the cell's own, under the styles of the spans after it.
    Cell: TypeAlias = str | tuple[tuple[str, str], ...]

# Standard output that is not a terminal is this many columns wide (rich's Console is made so).
PIPE_WIDTH = 200
COLUMN_GAP = "  "  # rich's default padding: one space each side of a cell, none at the edges

# What rich's Text drops from what it prints: bell, backspace, vertical tab, form feed, carriage
# return (`rich.control.strip_control_codes`).
_STRIPPED = dict.fromkeys((7, 8, 11, 12, 13))
# Variables that change whether rich treats standard output as a terminal
# (`rich.console.Console.is_terminal`): with one of them set, rich itself decides.
_RICH_TERMINAL_ENV = ("FORCE_COLOR", "TTY_COMPATIBLE")
TAB_SIZE = 8


def plain(text: str) -> str:
    """`text` as rich prints it to a file with markup off: without cursor-moving controls,
    tabs expanded."""
    text = text.translate(_STRIPPED)
    if "\t" not in text:
        return text
    if text.replace("\t", "").replace("\n", "").isprintable() and text.isascii():
        return text.expandtabs(TAB_SIZE)
    return "\n".join(_expand_tabs_by_cells(line) for line in text.split("\n"))


def _expand_tabs_by_cells(line: str) -> str:
    """Tab stops counted in terminal cells, as rich counts them (`Text.expand_tabs`): a wide
    character takes two, a control character none."""
    from rich.cells import cell_len

    parts = line.split("\t")
    position = 0
    expanded = []
    for part in parts[:-1]:
        position += cell_len(part) + 1  # the tab becomes a space, then pads to the next stop
        padding = -position % TAB_SIZE
        position += padding
        expanded.append(part + " " * (1 + padding))
    expanded.append(parts[-1])
    return "".join(expanded)


class Output:
    """A command's standard output (see the module docstring)."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console

    @property
    def rich(self) -> Console:
        """The rich Console, created on first use: piped output keeps whole lines up to 200
        columns (scripts parse it); a terminal gets its own width."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
        return self._console

    @property
    def is_terminal(self) -> bool:
        """Does standard output go to a terminal (colours, highlighted JSON)? As rich decides."""
        if self._console is not None or any(v in os.environ for v in _RICH_TERMINAL_ENV):
            return self.rich.is_terminal
        return sys.stdout.isatty()

    def write(self, text: str) -> None:
        """`text` as it is: no markup, no highlighting, no wrapping; flushed, so a stream
        (`events`, `logs -f`, progress) reaches a pipe as it happens."""
        if self._console is not None:
            self._console.print(
                text, markup=False, highlight=False, emoji=False, soft_wrap=True, end=""
            )
        else:
            sys.stdout.write(plain(text))
            sys.stdout.flush()

    def raw(self, text: str) -> None:
        """`text` exactly as it is, not even tabs expanded: what a docker template rendered."""
        file = self._console.file if self._console is not None else sys.stdout
        file.write(text)
        file.flush()

    def line(self, text: str = "", style: str = "") -> None:
        """`text` and a newline (see `write`), in a rich `style` on a terminal."""
        if style and self.is_terminal:
            from rich.text import Text

            self.rich.print(Text(text, style=style))
        else:
            self.write(text + "\n")

    def json(self, value: Any) -> None:
        """`value` as JSON: highlighted on a terminal, plain and unwrapped for scripts."""
        import json

        if self.is_terminal:
            self.rich.print_json(json.dumps(value), highlight=False)
        else:
            self.line(json.dumps(value, indent=2))

    def table(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[Cell]],
        *,
        wrap: Collection[str] = (),
    ) -> None:
        """A borderless table with these column headers, as `docker ... ls` prints; only the
        columns in `wrap` may wrap (if the table is wider than the page)."""
        if self._console is None and not self.is_terminal:
            lines = plain_table_lines(columns, [[cell_text(c) for c in row] for row in rows])
            if lines is not None:
                self.write("".join(line + "\n" for line in lines))
                return
        self.rich.print(rich_table(columns, rows, wrap=wrap))


def human_duration(seconds: float) -> str:
    """A duration as docker prints one (go-units' HumanDuration): "3 minutes", "About an hour"."""
    if seconds < 1:
        return "Less than a second"
    if int(seconds) == 1:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def print_list(
    out: Output,
    format_: str,
    quiet: bool,
    *,
    table: Callable[[], None],
    as_json: Callable[[], Any],
    ids: Callable[[], Sequence[str]],
    rows: Callable[[], tuple[Mapping[str, str], Sequence[Record]]],
) -> None:
    """A list command's output, by its `--format` and `-q` as docker decides: `table` prints
    the command's `table()`, or its `ids()` one a line with `-q`; `json` prints `as_json()`
    (swarmlet's documented JSON); a template (`table TEMPLATE` too, even with `-q`) renders
    `rows()`: (docker field -> column title, the rows under docker's field names)."""
    if format_ == "json":
        out.json(as_json())
    elif format_ == "table":
        if quiet:
            out.write("".join(f"{item}\n" for item in ids()))
        else:
            table()
    else:
        from swarmlet.cli.docker_format import render

        headers, records = rows()
        out.raw(render(format_, headers, records))


def print_inspected(out: Output, format_: str, items: Sequence[Any]) -> None:
    """An inspect command's output: the JSON array, or a template rendered per object, each
    followed by a newline (docker's `inspect --format`)."""
    if format_ == "json":
        out.json(list(items))
        return
    from swarmlet.cli.gotemplate import parse

    template = parse(format_)
    out.raw("".join(template.execute(item) + "\n" for item in items))


def error(text: str) -> None:
    """A line on standard error (errors, warnings), as it is."""
    sys.stderr.write(plain(text) + "\n")
    sys.stderr.flush()


def cell_text(cell: Cell) -> str:
    return cell if isinstance(cell, str) else "".join(text for text, _ in cell)


def plain_table_lines(
    columns: Sequence[str], rows: Sequence[Sequence[str]], width: int = PIPE_WIDTH
) -> list[str] | None:
    """The lines rich prints for `rich_table(columns, rows)` on a file `width` columns wide,
    header first; None where only rich knows: a cell that is not printable ASCII (wide or
    combining characters, controls), or a table wider than `width` (rich shrinks and wraps)."""
    table = [list(columns), *(list(row) for row in rows)]
    if not all(text.isascii() and text.isprintable() for row in table for text in row):
        return None
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    if sum(widths) + len(COLUMN_GAP) * (len(widths) - 1) > width:
        return None
    return [
        COLUMN_GAP.join(text.ljust(w) for text, w in zip(row, widths, strict=True)) for row in table
    ]


def rich_table(
    columns: Sequence[str], rows: Sequence[Sequence[Cell]], *, wrap: Collection[str] = ()
) -> Table:
    """The rich Table `Output.table` prints on a terminal. Cells are Text, never markup."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column not in wrap)
    for row in rows:
        table.add_row(*(_rich_cell(c) for c in row))
    return table


def _rich_cell(cell: Cell) -> Text:
    from rich.text import Text

    if isinstance(cell, str):
        return Text(cell)
    (first, style), *rest = cell
    text = Text(first, style=style)
    for span, span_style in rest:
        text.append(span, style=span_style)
    return text
