"""The subset of Go's text/template that `docker ... --format` scripts use, rendered as docker does.

Pure: a template's text and a value in, text out. `parse(text)` returns a `Template` or raises
`TemplateError`; `Template.execute(data)` renders it. The values are what JSON decodes to
(dict, list, str, int, float, bool, None) and `Record`s: the rows of a list command, with
docker's field names, whose unknown fields are errors (docker's row types are Go structs),
where a dict's missing key prints `<no value>` (docker's inspect falls back to the decoded JSON).

Supported, with Go's semantics: text and `{{ }}` actions with `{{-`/`-}}` trimming and
`{{/* comments */}}`; `.`, fields and nested fields (`.Config.Labels.color`), `$`, variables
(`$x := ...`, `range $k, $v := ...`), parenthesised pipelines with fields (`(index .M 0).Name`),
`|` pipelines, string (with Go's escapes), raw string, number, `true`/`false`/`nil` literals;
`if`/`else if`/`else`, `range` (lists, and maps in key order) with `else`, `with`/`else`;
Go's functions `and or not len index slice eq ne lt le gt ge print printf println`, and docker's
`json split join title lower upper pad truncate`. `Template.execute(..., header=True)` uses
docker's header functions (they leave a column's name as it is) to render a table's header row.
Anything else (`define`, `template`, `block`, `break`, `continue`, `call`, `html`, `js`,
`urlquery`, unknown functions) is a TemplateError that names it.

The values, how they print (Go's fmt `%v`) and the functions are `cli.gotemplate_values`;
this module lexes, parses and executes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from swarmlet.cli.gotemplate_values import (
    FUNCTIONS,
    HEADER_FUNCTIONS,
    NO_VALUE,
    NoValue,
    Record,
    TemplateError,
    go_print,
    go_type,
    truth,
)

__all__ = ["Record", "Template", "TemplateError", "parse"]


UNSUPPORTED = frozenset(
    {"define", "template", "block", "break", "continue", "call", "html", "js", "urlquery"}
)


# ---------------------------------------------------------------------------- lexing

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_COMMENT = re.compile(r"\s*/\*.*?\*/\s*", re.DOTALL)
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\]|\\.)+')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F_]+|\d[\d_]*(?:\.\d*)?(?:[eE][-+]?\d+)?
                     |\.\d+(?:[eE][-+]?\d+)?))
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<dot>\.)
  | (?P<variable>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<pipe>\|)
  | (?P<open>\()
  | (?P<close>\)(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<comma>,)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


def _tokens(source: str, line: int) -> list[Token]:
    tokens = []
    position = 0
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None:
            raise TemplateError(
                f"template: :{line}: unexpected {source[position]!r} in command: {source!r}"
            )
        position = match.end()
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(Token(kind, match.group()))
    return tokens


# ---------------------------------------------------------------------------- the parse tree


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Dot:
    pass


@dataclass(frozen=True)
class Field:
    """`.A.B` on dot, or on `receiver` (a variable or a parenthesised pipeline)."""

    names: tuple[str, ...]
    receiver: Variable | Pipeline | None = None


@dataclass(frozen=True)
class Variable:
    name: str


@dataclass(frozen=True)
class Function:
    name: str


Operand: TypeAlias = "Literal | Dot | Field | Variable | Function | Pipeline"


@dataclass(frozen=True)
class Command:
    operands: tuple[Operand, ...]


@dataclass(frozen=True)
class Pipeline:
    commands: tuple[Command, ...]
    declare: tuple[str, ...] = ()  # variables declared (`:=`) or assigned (`=`) its value
    assign: bool = False


@dataclass
class Text:
    text: str


@dataclass
class Action:
    pipeline: Pipeline


@dataclass
class Branch:
    """`if`, `range` or `with`: its pipeline, the list it runs, and its `else` list."""

    keyword: str
    pipeline: Pipeline
    body: list[Node] = field(default_factory=list)
    otherwise: list[Node] = field(default_factory=list)


Node: TypeAlias = "Text | Action | Branch"


# ---------------------------------------------------------------------------- parsing


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        # The `else if`/`else with` branches open now (by id): their {{end}} closes the
        # branch they are the else of, too.
        self.chained: set[int] = set()

    def parse(self) -> list[Node]:
        root: list[Node] = []
        # The open branches, innermost last; each with the list now being filled.
        stack: list[tuple[Branch, list[Node]]] = []
        position = 0
        trim_next = False
        for match in _ACTION.finditer(self.text):
            line = self.text.count("\n", 0, match.start()) + 1
            text = self.text[position : match.start()]
            if trim_next:
                text = text.lstrip()
            if match.group(1):
                text = text.rstrip()
            current = stack[-1][1] if stack else root
            if text:
                current.append(Text(text))
            position = match.end()
            trim_next = bool(match.group(3))
            inner = match.group(2)
            if _COMMENT.fullmatch(inner):
                continue
            if "/*" in inner:
                raise TemplateError(f"template: :{line}: comment ends before closing delimiter")
            self._action(_tokens(inner, line), line, root, stack)
        text = self.text[position:]
        if trim_next:
            text = text.lstrip()
        if "{{" in text:
            line = self.text.count("\n") + 1
            raise TemplateError(f"template: :{line}: unclosed action")
        if text:
            (stack[-1][1] if stack else root).append(Text(text))
        if stack:
            branch = stack[-1][0]
            raise TemplateError(
                f"template: :{self.text.count(chr(10)) + 1}: unexpected EOF "
                f"(missing {{{{end}}}} of {{{{{branch.keyword}}}}})"
            )
        return root

    def _action(
        self,
        tokens: list[Token],
        line: int,
        root: list[Node],
        stack: list[tuple[Branch, list[Node]]],
    ) -> None:
        if not tokens:
            raise TemplateError(f"template: :{line}: missing value for command")
        head = tokens[0]
        current = stack[-1][1] if stack else root
        if head.kind == "ident" and head.text in UNSUPPORTED:
            raise TemplateError(_unsupported(head.text, line))
        if head.kind == "ident" and head.text in ("if", "range", "with"):
            branch = Branch(head.text, self._pipeline(tokens[1:], line, head.text))
            current.append(branch)
            stack.append((branch, branch.body))
            return
        if head.kind == "ident" and head.text == "else":
            if not stack or stack[-1][1] is stack[-1][0].otherwise:
                raise TemplateError(f"template: :{line}: unexpected {{{{else}}}}")
            branch = stack[-1][0]
            if len(tokens) > 1:
                # `else if ...` / `else with ...`: a branch nested in the else list, closed by
                # the same {{end}}.
                keyword = tokens[1].text
                if tokens[1].kind != "ident" or keyword not in ("if", "with"):
                    raise TemplateError(f"template: :{line}: unexpected {keyword!r} after else")
                nested = Branch(keyword, self._pipeline(tokens[2:], line, keyword))
                branch.otherwise.append(nested)
                stack[-1] = (branch, branch.otherwise)
                stack.append((nested, nested.body))
                self.chained.add(id(nested))
                return
            stack[-1] = (branch, branch.otherwise)
            return
        if head.kind == "ident" and head.text == "end":
            if len(tokens) > 1 or not stack:
                raise TemplateError(f"template: :{line}: unexpected {{{{end}}}}")
            while True:
                closed, _ = stack.pop()
                if id(closed) not in self.chained:
                    break
                self.chained.discard(id(closed))
            return
        current.append(Action(self._pipeline(tokens, line, "command")))

    def _pipeline(self, tokens: list[Token], line: int, context: str) -> Pipeline:
        if not tokens:
            raise TemplateError(f"template: :{line}: missing value for {context}")
        declare: tuple[str, ...] = ()
        assign = False
        # `$x :=`, `$k, $v :=` (range), `$x =`
        for i, token in enumerate(tokens):
            if token.kind in ("declare", "assign"):
                names = [t for t in tokens[:i] if t.kind != "comma"]
                if not names or any(t.kind != "variable" or "." in t.text for t in names):
                    raise TemplateError(f"template: :{line}: bad variable declaration")
                if len(names) > (2 if context == "range" else 1):
                    raise TemplateError(f"template: :{line}: too many declarations in {context}")
                declare = tuple(t.text for t in names)
                assign = token.kind == "assign"
                tokens = tokens[i + 1 :]
                break
            if token.kind not in ("variable", "comma"):
                break
        commands: list[Command] = []
        operands: list[Operand] = []
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token.kind == "pipe":
                if not operands:
                    raise TemplateError(f"template: :{line}: missing command before |")
                commands.append(Command(tuple(operands)))
                operands = []
                position += 1
                continue
            operand, position = self._operand(tokens, position, line)
            operands.append(operand)
        if not operands:
            raise TemplateError(f"template: :{line}: missing command after |")
        commands.append(Command(tuple(operands)))
        return Pipeline(tuple(commands), declare, assign)

    def _operand(self, tokens: list[Token], position: int, line: int) -> tuple[Operand, int]:
        token = tokens[position]
        kind, text = token.kind, token.text
        if kind == "open":
            depth = 1
            end = position + 1
            while end < len(tokens):
                if tokens[end].kind == "open":
                    depth += 1
                elif tokens[end].kind == "close":
                    depth -= 1
                    if depth == 0:
                        break
                end += 1
            else:
                raise TemplateError(f"template: :{line}: unclosed left paren")
            inner = self._pipeline(tokens[position + 1 : end], line, "parenthesized pipeline")
            names = tuple(tokens[end].text.split(".")[1:])
            return (Field(names, inner) if names else inner), end + 1
        if kind == "close":
            raise TemplateError(f"template: :{line}: unexpected right paren")
        if kind == "field":
            return Field(tuple(text.split(".")[1:])), position + 1
        if kind == "dot":
            return Dot(), position + 1
        if kind == "variable":
            name, *chain = text.split(".")
            return (Field(tuple(chain), Variable(name)) if chain else Variable(name)), position + 1
        if kind == "string":
            return Literal(_unquote(text, line)), position + 1
        if kind == "raw":
            return Literal(text[1:-1]), position + 1
        if kind == "char":
            return Literal(ord(_unquote('"' + text[1:-1] + '"', line))), position + 1
        if kind == "number":
            return Literal(_number(text, line)), position + 1
        if kind == "ident":
            if text in ("true", "false"):
                return Literal(text == "true"), position + 1
            if text == "nil":
                return Literal(None), position + 1
            if text in UNSUPPORTED:
                raise TemplateError(_unsupported(text, line))
            if text not in FUNCTIONS:
                raise TemplateError(f'template: :{line}: function "{text}" not defined')
            return Function(text), position + 1
        raise TemplateError(f"template: :{line}: unexpected {text!r} in command")


def _unsupported(name: str, line: int) -> str:
    return (
        f"template: :{line}: \"{name}\" is not supported by swarmlet's templates: docker's "
        "subset is fields, variables, if/else, range, with and the functions "
        + ", ".join(FUNCTIONS)
    )


def _unquote(text: str, line: int) -> str:
    try:
        value = json.loads(text)
    except ValueError:
        # Go escapes JSON lacks (\a \v \x41 \101 \'): through Python's own.
        try:
            value = text[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
        except UnicodeDecodeError:
            raise TemplateError(f"template: :{line}: malformed string {text}") from None
    assert isinstance(value, str)
    return value


def _number(text: str, line: int) -> int | float:
    clean = text.replace("_", "")
    try:
        if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", clean):
            return int(clean, 16)
        if re.fullmatch(r"[-+]?\d+", clean):
            return int(clean)
        return float(clean)
    except ValueError:
        raise TemplateError(f"template: :{line}: bad number syntax: {text!r}") from None


def parse(text: str) -> Template:
    """The template `text`, or a TemplateError saying where it is wrong."""
    return Template(_Parser(text).parse())


# ---------------------------------------------------------------------------- execution


class _Scope:
    """Variables: a stack of frames, `$` at the bottom (Go scopes them by control structure)."""

    def __init__(self, root: Any) -> None:
        self.frames: list[dict[str, Any]] = [{"$": root}]

    def push(self) -> None:
        self.frames.append({})

    def pop(self) -> None:
        self.frames.pop()

    def get(self, name: str) -> Any:
        for frame in reversed(self.frames):
            if name in frame:
                return frame[name]
        raise TemplateError(f'undefined variable "{name}"')

    def declare(self, name: str, value: Any) -> None:
        self.frames[-1][name] = value

    def assign(self, name: str, value: Any) -> None:
        for frame in reversed(self.frames):
            if name in frame:
                frame[name] = value
                return
        raise TemplateError(f'undefined variable "{name}"')


@dataclass(frozen=True)
class Template:
    nodes: list[Node]

    def execute(self, data: Any, *, header: bool = False, partial: bool = False) -> str:
        """The text of this template over `data`; with `header`, docker's header functions.
        A TemplateError says what failed on this data; with `partial`, the text rendered
        before the failure is returned instead (as Go leaves it in its writer)."""
        out: list[str] = []
        functions = HEADER_FUNCTIONS if header else FUNCTIONS
        try:
            _Executor(functions, _Scope(data)).run(self.nodes, data, out)
        except TemplateError:
            if not partial:
                raise
        return "".join(out)


class _Executor:
    def __init__(self, functions: Mapping[str, Callable[..., Any]], scope: _Scope) -> None:
        self.functions = functions
        self.scope = scope

    def run(self, nodes: list[Node], dot: Any, out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, Text):
                out.append(node.text)
            elif isinstance(node, Action):
                value = self.pipeline(node.pipeline, dot)
                if not node.pipeline.declare:
                    out.append(go_print(value))
            else:
                self.branch(node, dot, out)

    def branch(self, node: Branch, dot: Any, out: list[str]) -> None:
        self.scope.push()
        try:
            if node.keyword == "range":
                self.range(node, dot, out)
                return
            value = self.pipeline(node.pipeline, dot)
            if truth(value):
                self.run(node.body, value if node.keyword == "with" else dot, out)
            else:
                self.run(node.otherwise, dot, out)
        finally:
            self.scope.pop()

    def range(self, node: Branch, dot: Any, out: list[str]) -> None:
        pipeline = node.pipeline
        value = self.pipeline(Pipeline(pipeline.commands), dot)
        items: Iterator[tuple[Any, Any]]
        if isinstance(value, Record):
            raise TemplateError(f"range can't iterate over {value.kind}")
        if isinstance(value, Mapping):
            items = ((k, value[k]) for k in sorted(value))
        elif isinstance(value, list | tuple):
            items = iter(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            items = iter(enumerate(range(value)))
        elif value is None or isinstance(value, NoValue):
            items = iter(())
        else:
            raise TemplateError(f"range can't iterate over {go_print(value)}")
        empty = True
        for key, element in items:
            empty = False
            self.scope.push()
            if len(pipeline.declare) == 1:
                self.scope.declare(pipeline.declare[0], element)
            elif len(pipeline.declare) == 2:
                self.scope.declare(pipeline.declare[0], key)
                self.scope.declare(pipeline.declare[1], element)
            self.run(node.body, element, out)
            self.scope.pop()
        if empty:
            self.run(node.otherwise, dot, out)

    def pipeline(self, pipeline: Pipeline, dot: Any) -> Any:
        value: Any = _UNSET
        for command in pipeline.commands:
            value = self.command(command, dot, value)
        for name in pipeline.declare:
            if pipeline.assign:
                self.scope.assign(name, value)
            else:
                self.scope.declare(name, value)
        return value

    def command(self, command: Command, dot: Any, piped: Any) -> Any:
        first, *rest = command.operands
        if isinstance(first, Function):
            name = first.name
            if name in ("and", "or"):
                return self.and_or(name, rest, dot, piped)
            arguments = [self.operand(a, dot) for a in rest]
            if piped is not _UNSET:
                arguments.append(piped)
            function = self.functions[name]
            try:
                return function(*arguments)
            except TypeError:
                raise TemplateError(
                    f"wrong number of args for {name}: got {len(arguments)}"
                ) from None
        if isinstance(first, Field) and (rest or piped is not _UNSET):
            # A method with arguments: `.Label "key"`, or `... | .Label`.
            method = self.operand(first, dot)
            if not callable(method):
                raise TemplateError(
                    f"{'.'.join(('', *first.names))} is not a method but has arguments"
                )
            arguments = [self.operand(a, dot) for a in rest]
            if piped is not _UNSET:
                arguments.append(piped)
            return _call(method, arguments, first)
        if rest or piped is not _UNSET:
            raise TemplateError(f"can't give argument to non-function {_describe(first)}")
        value = self.operand(first, dot)
        if callable(value) and isinstance(first, Field):
            return _call(value, [], first)
        return value

    def and_or(self, name: str, operands: list[Operand], dot: Any, piped: Any) -> Any:
        # Go evaluates `and`/`or` lazily, left to right, returning the deciding operand.
        if piped is not _UNSET:
            operands = [*operands, Literal(piped)]
        if not operands:
            raise TemplateError(f"wrong number of args for {name}: want at least 1 got 0")
        value: Any = None
        for operand in operands:
            value = self.operand(operand, dot)
            if truth(value) == (name == "or"):
                return value
        return value

    def operand(self, operand: Operand, dot: Any) -> Any:
        if isinstance(operand, Literal):
            return operand.value
        if isinstance(operand, Dot):
            return dot
        if isinstance(operand, Variable):
            return self.scope.get(operand.name)
        if isinstance(operand, Pipeline):
            return self.pipeline(operand, dot)
        if isinstance(operand, Function):
            return self.command(Command((operand,)), dot, _UNSET)
        receiver = dot
        if isinstance(operand.receiver, Variable):
            receiver = self.scope.get(operand.receiver.name)
        elif isinstance(operand.receiver, Pipeline):
            receiver = self.pipeline(operand.receiver, dot)
        for i, name in enumerate(operand.names):
            receiver = _field(receiver, name, last=i == len(operand.names) - 1)
        return receiver


_UNSET: Any = object()


def _call(method: Callable[..., Any], arguments: list[Any], operand: Field) -> Any:
    try:
        return method(*arguments)
    except TypeError:
        raise TemplateError(
            f"wrong number of args for {operand.names[-1]}: got {len(arguments)}"
        ) from None


def _describe(operand: Operand) -> str:
    if isinstance(operand, Literal):
        return go_print(operand.value)
    if isinstance(operand, Variable):
        return operand.name
    if isinstance(operand, Field):
        return "." + ".".join(operand.names)
    return "."


def _field(receiver: Any, name: str, *, last: bool) -> Any:
    if isinstance(receiver, Record):
        if name not in receiver:
            raise TemplateError(f"can't evaluate field {name} in type {receiver.kind}")
        value = receiver[name]
        # A method without arguments in the middle of a chain is called to go on.
        return value() if callable(value) and not last else value
    if isinstance(receiver, Mapping):
        return receiver.get(name, NO_VALUE)
    if isinstance(receiver, NoValue):
        return NO_VALUE
    if receiver is None:
        raise TemplateError(f"nil pointer evaluating interface {{}}.{name}")
    raise TemplateError(f"can't evaluate field {name} in type {go_type(receiver)}")
