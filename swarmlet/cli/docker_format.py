"""docker's `--format TEMPLATE` and `--format 'table TEMPLATE'` for list commands, as docker CLI 28
prints them (its `formatter.Context`), over rows with docker's field names.

Pure: a format and rows in, the text to print out. A template runs once per row, each result
followed by a newline; `\\t` and `\\n` written as two characters become a tab and a newline, as
docker replaces them. `table TEMPLATE` prints a header row first (the same template over the
column names, with docker's header functions) and aligns the tab-separated cells as docker's
`text/tabwriter` does (minimum width 10, padding 3, spaces); the last cell of a line is never
padded. Only the commands that were given a template load this module (and the template engine).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from swarmlet.cli.gotemplate import Record, parse

TABLE_PREFIX = "table"
# docker's tabwriter.NewWriter(output, 10, 1, 3, ' ', 0)
TAB_MIN_WIDTH = 10
TAB_PADDING = 3


def template_text(format_: str) -> tuple[bool, str]:
    """Is `format_` a table, and the template it runs (docker's `Context.preFormat`)."""
    is_table = format_.startswith(TABLE_PREFIX)
    text = format_[len(TABLE_PREFIX) :] if is_table else format_
    text = text.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    return is_table, text


def render(format_: str, headers: Mapping[str, str], rows: Sequence[Record]) -> str:
    """What docker prints for `--format format_` over `rows`, whose columns are named `headers`
    (docker field name -> column title); a TemplateError says what is wrong."""
    is_table, text = template_text(format_)
    template = parse(text)
    body = "".join(template.execute(row) + "\n" for row in rows)
    if not is_table:
        return body
    # docker ignores an error in the header row: it prints what rendered before it.
    header = template.execute({**headers, "Label": label_header}, header=True, partial=True)
    return tabwriter(header + "\n" + body)


def label_header(name: str) -> str:
    """The header of a `{{.Label "com.example.team"}}` column: `team` (docker's
    `SubHeaderContext.Label`: the last dotted part, `-` and `_` as spaces)."""
    return name.split(".")[-1].replace("-", " ").replace("_", " ")


def tabwriter(text: str) -> str:
    """`text` aligned as Go's text/tabwriter does with docker's settings: a cell is text ended
    by a tab; a column's cells in consecutive lines form a block padded to its widest cell
    plus 3, at least 10; the text after a line's last tab is written as it is."""
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    _format(lines, 0, len(lines), [], out)
    return "\n".join(out)


def _format(
    lines: list[list[str]], start: int, end: int, widths: list[int], out: list[str]
) -> None:
    """Go's `Writer.format`: find the blocks of column `len(widths)` in lines [start, end),
    size each, and recurse into the columns right of it; write lines with no cell there."""
    column = len(widths)
    line = start
    while line < end:
        if column >= len(lines[line]) - 1:
            out.append(_write(lines[line], widths))
            line += 1
            continue
        block_start = line
        width = TAB_MIN_WIDTH
        while line < end and column < len(lines[line]) - 1:
            width = max(width, len(lines[line][column]) + TAB_PADDING)
            line += 1
        _format(lines, block_start, line, [*widths, width], out)


def _write(cells: list[str], widths: list[int]) -> str:
    return "".join(
        cell.ljust(widths[i]) if i < len(widths) else cell for i, cell in enumerate(cells)
    )
