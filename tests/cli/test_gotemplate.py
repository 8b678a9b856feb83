"""cli.gotemplate (and its values, cli.gotemplate_values): Go's text/template subset that docker's
`--format` uses, in tables.

Each row is a template, the data and what Go prints (checked against docker where the data
allows: `test_gotemplate_docker` holds docker's own output for real objects)."""

from __future__ import annotations

from typing import Any

import pytest

from swarmlet.cli.gotemplate import Record, TemplateError, parse
from swarmlet.cli.gotemplate_values import go_float, go_json, go_print
from swarmlet.errors import UsageError

SERVICE = Record(
    "*formatter.serviceContext",
    {
        "ID": "kumeeuaxer5u",
        "Name": "web",
        "Mode": "replicated",
        "Replicas": "2/2",
        "Image": "swarmlet/web:1",
        "Ports": "*:8080->80/tcp",
        "Label": lambda key: {"tier": "front"}.get(key, ""),
    },
)
DATA: dict[str, Any] = {
    "Name": "web",
    "Spec": {"Labels": {"b": "2", "a": "1"}, "Env": ["A=1", "B=2"], "Replicas": 3},
    "Ports": [{"Published": 8080, "Target": 80}, {"Published": 8443, "Target": 443}],
    "Running": True,
    "Stopped": False,
    "Empty": "",
    "Nil": None,
    "Ratio": 0.5,
    "Count": 0,
}


@pytest.mark.parametrize(
    ("template", "data", "expected"),
    [
        # text, fields, nested fields, dot
        ("plain text", DATA, "plain text"),
        ("{{.Name}}", DATA, "web"),
        ("{{.Spec.Replicas}}", DATA, "3"),
        ("{{.Spec.Labels.a}}", DATA, "1"),
        ("{{.}}", "x", "x"),
        ("{{.Name}} {{.Replicas}}", SERVICE, "web 2/2"),
        ("{{.Missing}}", DATA, "<no value>"),
        ("{{.Missing.Deeper}}", DATA, "<no value>"),
        # printing as Go's %v
        ("{{.Spec.Labels}}", DATA, "map[a:1 b:2]"),
        ("{{.Spec.Env}}", DATA, "[A=1 B=2]"),
        ("{{.Ports}}", DATA, "[map[Published:8080 Target:80] map[Published:8443 Target:443]]"),
        ("{{.Running}} {{.Nil}} {{.Ratio}} {{.Count}}", DATA, "true <nil> 0.5 0"),
        # json
        ("{{json .Spec.Labels}}", DATA, '{"b":"2","a":"1"}'),
        (
            "{{json .}}",
            SERVICE,
            '{"ID":"kumeeuaxer5u","Image":"swarmlet/web:1",'
            '"Mode":"replicated","Name":"web","Ports":"*:8080->80/tcp","Replicas":"2/2"}',
        ),
        ('{{json "<a&b>"}}', DATA, '"<a&b>"'),
        ("{{json .Nil}} {{json .Ratio}}", DATA, "null 0.5"),
        # index, len, slice
        ('{{index .Spec.Labels "a"}}', DATA, "1"),
        ('{{index .Spec.Labels "zz"}}', DATA, ""),
        ("{{index .Spec.Env 1}}", DATA, "B=2"),
        ("{{(index .Ports 1).Target}}", DATA, "443"),
        ("{{len .Spec.Env}} {{len .Name}}", DATA, "2 3"),
        ("{{slice .Name 1}} {{slice .Spec.Env 0 1}}", DATA, "eb [A=1]"),
        # range
        ("{{range .Spec.Env}}[{{.}}]{{end}}", DATA, "[A=1][B=2]"),
        ("{{range $k, $v := .Spec.Labels}}{{$k}}={{$v}},{{end}}", DATA, "a=1,b=2,"),
        ("{{range $i, $p := .Ports}}{{$i}}:{{$p.Published}} {{end}}", DATA, "0:8080 1:8443 "),
        ("{{range $p := .Ports}}{{$p.Target}}{{end}}", DATA, "80443"),
        ("{{range .Nil}}x{{else}}none{{end}}", DATA, "none"),
        ("{{range .Ports}}{{$.Name}}{{end}}", DATA, "webweb"),
        # if / else if / else, with
        ("{{if .Running}}up{{end}}", DATA, "up"),
        ("{{if .Stopped}}a{{else}}b{{end}}", DATA, "b"),
        ("{{if .Stopped}}a{{else if .Empty}}b{{else if .Name}}c{{else}}d{{end}}", DATA, "c"),
        ("{{if .Count}}a{{else if .Nil}}b{{else}}d{{end}}", DATA, "d"),
        ("{{if .Ports}}{{if .Stopped}}x{{else}}y{{end}}{{end}}", DATA, "y"),
        ("{{with .Spec.Labels.a}}<{{.}}>{{end}}", DATA, "<1>"),
        ("{{with .Empty}}x{{else}}empty{{end}}", DATA, "empty"),
        ("{{with $x := .Name}}{{$x}}!{{end}}", DATA, "web!"),
        # comparisons, logic
        ('{{if eq .Name "web"}}yes{{end}}', DATA, "yes"),
        ('{{if eq .Name "api" "db" "web"}}one of{{end}}', DATA, "one of"),
        ('{{if ne .Name "web"}}x{{else}}same{{end}}', DATA, "same"),
        (
            "{{if gt .Spec.Replicas 2}}many{{end}} {{lt 1 2}} {{ge 2 2}} {{le 3 2}}",
            DATA,
            "many true true false",
        ),
        ("{{and .Running .Name}} {{or .Empty .Name}} {{not .Running}}", DATA, "web web false"),
        ("{{and .Stopped .Missing.Field}}", DATA, "false"),  # stops at the first false
        ("{{if eq .Running true}}t{{end}}", DATA, "t"),
        # docker's functions
        ('{{join .Spec.Env ","}}', DATA, "A=1,B=2"),
        ('{{split "a:b:c" ":"}}', DATA, "[a b c]"),
        (
            '{{upper .Name}} {{lower "ABC"}} {{title "hello wide-world"}}',
            DATA,
            "WEB abc Hello Wide-World",
        ),
        ("{{pad .Name 2 1}}|{{pad .Empty 2 1}}|", DATA, "  web ||"),
        ("{{truncate .Name 2}} {{truncate .Name 10}}", DATA, "we web"),
        ('{{println "a" 1}}', DATA, "a 1\n"),
        ('{{print "a" "b" 1 2 "c"}}', DATA, "ab1 2c"),
        (
            '{{printf "%s=%d %v %q %5s|%-4s|%t %%" .Name 3 .Ratio "x" "r" "l" true}}',
            DATA,
            'web=3 0.5 "x"     r|l   |true %',
        ),
        ('{{printf "%d"}}', DATA, "%!d(MISSING)"),
        # pipelines, methods, variables, literals
        ("{{.Name | upper}}", DATA, "WEB"),
        ('{{.Name | printf "%s-%s" "x"}}', DATA, "x-web"),
        ('{{.Label "tier"}}|{{.Label "none"}}', SERVICE, "front|"),
        ('{{"tier" | .Label}}', SERVICE, "front"),
        ('{{$n := .Name}}{{$n}}{{$n = "api"}}{{$n}}', DATA, "webapi"),
        (
            '{{`raw\\t`}} {{"tab\\tquote\\""}} {{\'a\'}} {{0x1F}} {{1.5}} {{-2}}',
            DATA,
            'raw\\t tab\tquote" 97 31 1.5 -2',
        ),
        ("{{true}} {{false}} {{nil}}", DATA, "true false <nil>"),
        # trimming and comments
        ("a  {{- .Name -}}  b", DATA, "awebb"),
        ("a {{/* note */}}b", DATA, "a b"),
        ("a\n  {{- /* note */ -}}\n  b", DATA, "ab"),
        ("{{-3}}", DATA, "-3"),
    ],
)
def test_a_template_renders_as_go_renders_it(template: str, data: Any, expected: str) -> None:
    assert parse(template).execute(data) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ('{{define "x"}}{{end}}', '"define" is not supported'),
        ('{{template "x"}}', '"template" is not supported'),
        ('{{block "x" .}}{{end}}', '"block" is not supported'),
        ("{{range .X}}{{break}}{{end}}", '"break" is not supported'),
        ("{{range .X}}{{continue}}{{end}}", '"continue" is not supported'),
        ("{{call .F}}", '"call" is not supported'),
        ("{{html .Name}}", '"html" is not supported'),
        ("{{urlquery .Name}}", '"urlquery" is not supported'),
        ("{{nosuch .Name}}", 'function "nosuch" not defined'),
        ("{{.Name", "unclosed action"),
        ("{{if .X}}a", "missing {{end}} of {{if}}"),
        ("{{end}}", "unexpected {{end}}"),
        ("{{else}}", "unexpected {{else}}"),
        ("{{if .X}}{{else}}{{else}}{{end}}", "unexpected {{else}}"),
        ("{{}}", "missing value for command"),
        ("{{(index .X}}", "unclosed left paren"),
        ("{{.X | }}", "missing command after |"),
        ("{{.X ;}}", "unexpected ';'"),
        ("{{/* open }}", "comment ends before closing delimiter"),
    ],
)
def test_what_the_engine_lacks_is_an_error_that_names_it(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as error:
        parse(template)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("template", "data", "message"),
    [
        ("{{.Nope}}", SERVICE, "can't evaluate field Nope in type *formatter.serviceContext"),
        ("{{.Name.First}}", DATA, "can't evaluate field First in type string"),
        ("{{.Nil.Field}}", DATA, "nil pointer evaluating interface {}.Field"),
        ("{{.Name 1}}", DATA, ".Name is not a method but has arguments"),
        ('{{"x" 1}}', DATA, "can't give argument to non-function x"),
        ("{{.Label}}", SERVICE, "wrong number of args for Label"),
        ("{{upper .Spec}}", DATA, "error calling upper: wrong type for value; expected string"),
        ('{{join .Name ","}}', DATA, "expected []string; got string"),
        ("{{index .Spec.Env 5}}", DATA, "index out of range: 5"),
        ("{{lt .Name 1}}", DATA, "incompatible types for comparison"),
        ("{{range .Name}}{{end}}", DATA, "range can't iterate over web"),
        ("{{$nope}}", DATA, 'undefined variable "$nope"'),
        ("{{len 3}}", DATA, "len of type int"),
        ("{{upper}}", DATA, "wrong number of args for upper"),
    ],
)
def test_a_template_that_fails_on_the_data_says_why(template: str, data: Any, message: str) -> None:
    with pytest.raises(TemplateError) as error:
        parse(template).execute(data)
    assert message in str(error.value)


def test_a_template_error_is_a_usage_error() -> None:
    assert issubclass(TemplateError, UsageError)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{.Name}}\t{{.Replicas}}", "NAME\tREPLICAS"),
        ("{{.Name | upper}} {{lower .Mode}}", "NAME MODE"),
        (
            '{{json .Name}} {{join .Name ","}} {{truncate .Name 2}} {{title .Name}}',
            "NAME NAME NAME NAME",
        ),
        ('{{split .Name ","}}', "NAME"),
        ("{{pad .Name 1 1}}", " NAME "),  # docker keeps `pad` in headers, to align with cells
        ("{{.Unknown}}", "<no value>"),
    ],
)
def test_headers_render_the_column_names_with_dockers_header_functions(
    template: str, expected: str
) -> None:
    headers = {"Name": "NAME", "Replicas": "REPLICAS", "Mode": "MODE"}
    assert parse(template).execute(headers, header=True) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, "0"),
        (-0.0, "-0"),
        (2.0, "2"),
        (0.5, "0.5"),
        (-1.25, "-1.25"),
        (100000.0, "100000"),
        (123456.0, "123456"),
        (1e6, "1e+06"),
        (1234567.0, "1.234567e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1.5e-7, "1.5e-07"),
        (1e21, "1e+21"),
        (0.1 + 0.2, "0.30000000000000004"),
        (float("inf"), "+Inf"),
        (float("nan"), "NaN"),
    ],
)
def test_floats_print_as_go_prints_a_float64(value: float, expected: str) -> None:
    assert go_float(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": [1, "x", None]}, "map[a:[1 x <nil>] b:1]"),
        ([], "[]"),
        ({}, "map[]"),
        (True, "true"),
    ],
)
def test_values_print_as_gos_fmt_v(value: Any, expected: str) -> None:
    assert go_print(value) == expected


def test_json_is_compact_keeps_html_and_writes_whole_floats_as_integers() -> None:
    assert go_json({"a": "<é>", "b": 2.0, "c": [1.5]}) == '{"a":"<é>","b":2,"c":[1.5]}'
    assert go_json("\u2028") == '"\\u2028"'


def test_a_parsed_template_renders_many_values() -> None:
    template = parse("{{.Name}}")
    assert [template.execute({"Name": n}) for n in ("a", "b")] == ["a", "b"]
