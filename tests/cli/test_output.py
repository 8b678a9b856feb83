"""cli.output: what a script reads is what rich would have printed, without loading rich.

The plain paths (text, JSON, tables written directly to a pipe) are held equal, character for
character, to rich printing the same thing to a file of the pipe's width; data is never read as
markup or emoji codes; a terminal still gets rich's styles.
"""

from __future__ import annotations

import io
import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from swarmlet.cli.output import (
    PIPE_WIDTH,
    Output,
    error,
    plain,
    plain_table_lines,
    rich_table,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from swarmlet.cli.output import Cell

# Characters where rich and str differ if anything does: tabs after wide, combining and
# control characters, line and record separators, the controls rich drops.
TRICKY = st.lists(
    st.sampled_from(["\t", "\n", "\r", "\x07", "\x1b", "\x1e", "\x85", "a", " ", "é", "中"])
    | st.sampled_from(["\u0301", "\u200b", "[red]", ":smile:", "\u2028", "\x0b"]),
    max_size=30,
).map("".join)


def rich_file_output(text: str) -> str:
    out = io.StringIO()
    Console(file=out, width=PIPE_WIDTH).print(
        text, markup=False, highlight=False, emoji=False, soft_wrap=True
    )
    return out.getvalue()


@settings(max_examples=500)
@given(st.text() | TRICKY)
def test_plain_text_is_what_rich_prints_to_a_file(text: str) -> None:
    assert plain(text) + "\n" == rich_file_output(text)


def test_a_line_goes_out_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    text = "web: [red]update paused[/red] :smile: " + "x" * 300
    Output().line(text)
    assert capsys.readouterr().out == text + "\n"  # no markup, no emoji, no wrapping


def test_json_for_scripts_is_indented_and_taken_literally(
    capsys: pytest.CaptureFixture[str],
) -> None:
    value = [{"name": "web", "labels": {"note": ":smile: [bold]x[/bold]"}, "n": 1.5}]
    Output().json(value)
    assert capsys.readouterr().out == json.dumps(value, indent=2) + "\n"


def test_an_injected_console_receives_everything() -> None:
    file = io.StringIO()
    out = Output(Console(file=file, width=PIPE_WIDTH))
    out.line("one")
    out.json({"a": 1})
    out.table(("ID", "NAME"), [["1", "web"]])
    assert file.getvalue() == 'one\n{\n  "a": 1\n}\nID  NAME\n1   web \n'


def test_errors_are_one_unwrapped_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    message = "error: swarmlet node ls: argument --format: invalid choice: 'yaml' " + "y" * 100
    error(message)
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", message + "\n")


def test_force_color_lets_rich_decide_what_a_terminal_is(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    assert not Output().is_terminal
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert Output().is_terminal


# ---------------------------------------------------------------------------- tables

CELL = st.text(alphabet=string.printable[:95], max_size=40)  # printable ASCII, spaces included


def rich_table_output(
    columns: list[str], rows: list[list[str]], wrap: tuple[str, ...] = (), *, terminal: bool = False
) -> str:
    out = io.StringIO()
    console = Console(file=out, width=PIPE_WIDTH, force_terminal=terminal)
    console.print(rich_table(columns, rows, wrap=wrap))
    return out.getvalue()


@settings(max_examples=300)
@given(
    st.lists(st.text(alphabet=string.ascii_uppercase + " ", min_size=1, max_size=14), min_size=1)
    .map(lambda cs: [c.strip() or "X" for c in cs[:9]])
    .flatmap(
        lambda columns: st.tuples(
            st.just(columns),
            st.lists(st.lists(CELL, min_size=len(columns), max_size=len(columns)), max_size=5),
            st.sets(st.sampled_from(columns)),
        )
    )
)
def test_a_plain_table_is_what_rich_prints_to_a_file(
    table: tuple[list[str], list[list[str]], set[str]],
) -> None:
    columns, rows, wrap = table
    lines = plain_table_lines(columns, rows)
    if lines is None:  # wider than the page: only rich lays it out
        widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns))]
        assert sum(widths) + 2 * (len(columns) - 1) > PIPE_WIDTH
        return
    assert "".join(line + "\n" for line in lines) == rich_table_output(columns, rows, tuple(wrap))


@pytest.mark.parametrize("width", [PIPE_WIDTH - 1, PIPE_WIDTH, PIPE_WIDTH + 1])
def test_a_table_as_wide_as_the_page_is_plain_and_one_wider_is_rich(width: int) -> None:
    rows = [["a" * 50, "b" * 50, "c" * (width - 104)]]
    lines = plain_table_lines(("A", "B", "C"), rows)
    if width > PIPE_WIDTH:
        assert lines is None
    else:
        assert lines is not None
        assert "".join(f"{line}\n" for line in lines) == rich_table_output(["A", "B", "C"], rows)


@pytest.mark.parametrize("cell", ["中文", "e\u0301", "a\tb", "\x1b[31m"])
def test_cells_that_are_not_plain_ascii_are_left_to_rich(cell: str) -> None:
    assert plain_table_lines(("NAME",), [[cell]]) is None


def test_a_table_to_a_pipe_is_plain_and_on_a_terminal_styled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows: list[list[Cell]] = [
        ["n1", (("Down", "red"),)],
        ["n2", (("Running", "green"), (" 5 s ago", "dim"))],
    ]
    Output().table(("NAME", "STATE"), rows)
    assert capsys.readouterr().out == (
        "NAME  STATE          \nn1    Down           \nn2    Running 5 s ago\n"
    )
    file = io.StringIO()
    Output(Console(file=file, width=80, force_terminal=True)).table(("NAME", "STATE"), rows)
    assert "\x1b[31mDown" in file.getvalue()
    # The first span's style covers the cell; later spans add theirs (dim green).
    assert "\x1b[2;32m 5 s ago" in file.getvalue()


def test_cells_are_never_markup() -> None:
    out = rich_table_output(["NAME"], [["[red]x[/red] :smile:"]], terminal=True)
    assert "[red]x[/red] :smile:" in out
