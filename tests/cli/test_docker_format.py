"""cli.docker_format: docker's `--format` over list rows, and its tabwriter, in tables.
(docker's own output for real rows: `test_gotemplate_docker`.)"""

from __future__ import annotations

import pytest

from swarmlet.cli.docker_format import render, tabwriter, template_text
from swarmlet.cli.gotemplate import Record, TemplateError

HEADERS = {"ID": "ID", "Name": "NAME", "Replicas": "REPLICAS", "Self": ""}
ROWS = [
    Record("*row", {"ID": "kumeeuaxer5u", "Name": "web", "Replicas": "2/2", "Self": True}),
    Record("*row", {"ID": "x1", "Name": "a-much-longer-name", "Replicas": "10/10", "Self": False}),
]


@pytest.mark.parametrize(
    ("format_", "expected"),
    [
        ("table", (True, "")),
        ("table {{.Name}}", (True, "{{.Name}}")),
        ("table   {{.Name}}\\t{{.ID}}  ", (True, "{{.Name}}\t{{.ID}}")),
        ("{{.Name}}\\n{{.ID}}", (False, "{{.Name}}\n{{.ID}}")),
        ("{{.Name}}\t{{.ID}}", (False, "{{.Name}}\t{{.ID}}")),
        (" {{.Name}} ", (False, "{{.Name}}")),
    ],
)
def test_the_format_is_read_as_dockers_context_reads_it(
    format_: str, expected: tuple[bool, str]
) -> None:
    assert template_text(format_) == expected


@pytest.mark.parametrize(
    ("format_", "expected"),
    [
        ("{{.Name}} {{.Replicas}}", "web 2/2\na-much-longer-name 10/10\n"),
        ("{{.Name}}\\t{{.ID}}", "web\tkumeeuaxer5u\na-much-longer-name\tx1\n"),
        (
            "{{json .}}",
            '{"ID":"kumeeuaxer5u","Name":"web","Replicas":"2/2","Self":true}\n'
            '{"ID":"x1","Name":"a-much-longer-name","Replicas":"10/10","Self":false}\n',
        ),
        (
            "table {{.Name}}\\t{{.Replicas}}",
            "NAME                 REPLICAS\nweb                  2/2\na-much-longer-name   10/10\n",
        ),
        (
            "table {{.ID}} {{if .Self}}*{{else}} {{end}}\\t{{.Name}}",
            "ID               NAME\nkumeeuaxer5u *   web\nx1               a-much-longer-name\n",
        ),
        ("table {{.Name | upper}}", "NAME\nWEB\nA-MUCH-LONGER-NAME\n"),
    ],
)
def test_rows_render_as_docker_prints_them(format_: str, expected: str) -> None:
    assert render(format_, HEADERS, ROWS) == expected


def test_a_table_with_no_rows_prints_its_header() -> None:
    assert render("table {{.Name}}\\t{{.ID}}", HEADERS, []) == "NAME      ID\n"


@pytest.mark.parametrize(
    ("label", "header"),
    [("tier", "tier"), ("com.example.tier", "tier"), ("com.example.my_team-name", "my team name")],
)
def test_a_label_columns_header_is_the_labels_last_part(label: str, header: str) -> None:
    rows = [Record("*row", {"Label": lambda key: "front"})]
    assert render(f'table {{{{.Label "{label}"}}}}', {}, rows) == f"{header}\nfront\n"


def test_a_header_that_fails_keeps_what_rendered_before_as_docker_does() -> None:
    # `json` takes a string in a header: the whole row, a map, is an error there.
    assert render("table {{.Name}}\\t{{json .Replicas}}/{{json .}}", HEADERS, ROWS[:1]) == (
        "NAME      REPLICAS/\n"
        'web       "2/2"/{"ID":"kumeeuaxer5u","Name":"web","Replicas":"2/2","Self":true}\n'
    )


def test_a_field_the_rows_lack_is_an_error() -> None:
    with pytest.raises(TemplateError, match="can't evaluate field Nope in type \\*row"):
        render("{{.Nope}}", HEADERS, ROWS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("a\tb\n", "a         b\n"),  # minimum width 10
        ("abcdefghij\tb\n", "abcdefghij   b\n"),  # padding 3
        (
            "a\tb\tc\nlonger-cell\tb\tc\n",
            "a             b         c\nlonger-cell   b         c\n",
        ),
        # the last cell of a line is not padded, however long
        (
            "a\tshort\nb\ta-very-long-last-cell\n",
            "a         short\nb         a-very-long-last-cell\n",
        ),
        # a line without tabs ends the column block: widths start again after it
        ("a\tb\nno tabs here\nlonger-cell\tb\n", "a         b\nno tabs here\nlonger-cell   b\n"),
        # lines with fewer cells take part in the columns they have
        ("a\tb\tc\nxx\n", "a         b         c\nxx\n"),
        ("a\tb\tc\nxx\tyy\n", "a         b         c\nxx        yy\n"),
        ("\t\tc\n", "                    c\n"),
        ("no newline at the end\tx", "no newline at the end   x"),
    ],
)
def test_tabwriter_aligns_as_gos_with_dockers_settings(text: str, expected: str) -> None:
    assert tabwriter(text) == expected
