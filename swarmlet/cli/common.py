"""What every `swarmlet` subcommand shares: exit statuses, the parser pieces (with docker's flag
conventions: boolean flags that take `=false`, `-q`, `--format`, `--filter`), finding and calling
the local agent.

The command modules (`cli.cluster`, `cli.node`, `cli.service`, ...) import from here and never
from `cli.main`, which imports them: the dependency runs one way. This module stays cheap to
import (argparse and the standard library, not even `typing`): `--help` builds the whole parser,
and every command builds its own. A command loads what it uses when it runs: the blocking
control client (a socket and msgpack, no event loop) when it calls the agent, rich only when
its output needs it (`cli.output`).
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from swarmlet.errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any, NoReturn, TypeAlias, TypeVar

    from swarmlet.api.control_client import BlockingControlClient
    from swarmlet.cli.output import Output
    from swarmlet.security.datadir import DataDir

    # What `ArgumentParser.add_subparsers()` returns: commands are added to it.
    Subcommands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
    Item = TypeVar("Item")


class ExitStatus(enum.IntEnum):
    """The process's exit status: what scripts may rely on."""

    OK = 0
    ERROR = 1  # the command failed: the message on stderr says why
    USAGE = 2  # the command line was wrong, or the command does not apply here
    STORAGE_CORRUPT = 3  # the agent refused to start: its Raft storage does not load
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


Command = Callable[[argparse.Namespace, "Output"], ExitStatus]


class UsageParser(argparse.ArgumentParser):
    """An ArgumentParser that raises UsageError instead of exiting, so `cli.main` maps every
    failure to its exit status in one place; its boolean flags read as docker's do (`BoolFlag`)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if args is not None:
            args = explicit_booleans(self, list(args))
        return super().parse_known_args(args, namespace)


# ---------------------------------------------------------------------------- boolean flags

# Go's strconv.ParseBool, which docker's flags use for `--flag=value`.
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(text: str) -> bool:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r} (true or false)")


class BoolFlag(argparse.Action):
    """A boolean flag as docker's: `--force` sets it, `--force=false` and `--force=true` say
    which; `--force false` is the flag and then an argument, as in docker. (`UsageParser`
    writes a bare flag as `--force=true` before argparse sees it, so the flag never takes the
    next word as its value.)"""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str,
        default: bool = False,
        help: str | None = None,
    ) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs="?",
            const=True,
            default=default,
            type=parse_bool,
            metavar="=false",
            help=help,
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)


def explicit_booleans(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """`args` with every bare BoolFlag of `parser` written `FLAG=true`, and short flags written
    together after a boolean one taken apart (`-ft` is `-f -t`). Stops at `--`, and at
    the first positional argument of a parser with subcommands (theirs are their own) or with
    a trailing REMAINDER (a service's command, whose flags are the container's)."""
    actions = parser._option_string_actions
    stop_at_positional = any(
        isinstance(a, argparse._SubParsersAction) or a.nargs == argparse.REMAINDER
        for a in parser._actions
        if not a.option_strings
    )
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            if arg == "--" or stop_at_positional:
                return out + args[i:]
            out.append(arg)
            i += 1
            continue
        name, has_value, _ = arg.partition("=")
        action = actions.get(name)
        if (
            action is None
            and not has_value
            and not arg.startswith("--")
            and len(arg) > 2
            and isinstance(actions.get(arg[:2]), BoolFlag)
        ):
            # Short flags written together, as docker's (pflag) read them: `-ft` is `-f -t`.
            args = [*args[:i], arg[:2], "-" + arg[2:], *args[i + 1 :]]
            continue
        if isinstance(action, BoolFlag):
            out.append(arg if has_value else f"{arg}=true")
            i += 1
            continue
        out.append(arg)
        i += 1
        if action is not None and not has_value and action.nargs in (None, 1) and i < len(args):
            out.append(args[i])  # the flag's value, whatever it looks like
            i += 1
    return out


def add_bool(parser: argparse.ArgumentParser, *flags: str, help_: str) -> None:
    """A docker-style boolean flag (`BoolFlag`); its help shows that it takes `=false`."""
    parser.add_argument(*flags, action=BoolFlag, help=help_)


# ---------------------------------------------------------------------------- parser pieces


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        help="the agent's data directory "
        "(default: $SWARMLET_DATA_DIR, or /var/lib/swarmlet as root)",
    )


def add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="output format"
    )


# ---------------------------------------------------------------------------- list commands

# `--format` of a list command: swarmlet's table and JSON (contracts), or a docker template.
FORMAT_HELP = (
    "table (default), json (swarmlet's JSON), or a Go template over docker's fields, "
    "'table TEMPLATE' with a header row"
)


def list_format(text: str) -> str:
    """A list command's `--format`: `table`, `json`, or a template (what has `{{`: a word
    without one is a mistake here, where docker would print it once per row)."""
    if text in ("table", "json") or "{{" in text:
        return text
    raise argparse.ArgumentTypeError(
        f"invalid choice: {text!r} (choose from 'table', 'json', or a Go template such as "
        "'{{.Name}}' or 'table {{.ID}}\\t{{.Name}}')"
    )


def inspect_format(text: str) -> str:
    """An inspect command's `--format`: `json` (the default) or a template."""
    if text == "json" or "{{" in text:
        return text
    raise argparse.ArgumentTypeError(
        f"invalid choice: {text!r} (choose from 'json' or a Go template such as '{{{{.id}}}}')"
    )


# The filter keys whose values must all match (docker's `label`); the others match any value.
ALL_OF_FILTERS = frozenset({"label", "node.label"})


def filter_type(accepted: Mapping[str, Sequence[str]]) -> Callable[[str], tuple[str, str]]:
    """What `--filter KEY=VALUE` accepts: docker's keys for the command (key -> the values it
    takes, or () for any), in docker's words when wrong."""

    def parse(text: str) -> tuple[str, str]:
        key, sep, value = text.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError("bad format of filter (expected name=value)")
        key, value = key.strip().lower(), value.strip()
        if key not in accepted:
            raise argparse.ArgumentTypeError(
                f"invalid filter '{key}' (accepted: {', '.join(accepted)})"
            )
        choices = accepted[key]
        if choices and value.lower() not in choices:
            raise argparse.ArgumentTypeError(
                f"invalid filter '{key}={value}' (accepted: {', '.join(choices)})"
            )
        return key, (value.lower() if choices else value)

    return parse


def add_list_flags(
    parser: argparse.ArgumentParser,
    *,
    example: str,
    filters: Mapping[str, Sequence[str]] | None = None,
    filter_example: str = "",
    quiet: str = "only display IDs",
    operand: str = "",
) -> None:
    """docker's `-q`, `--format` and (given its keys) `-f/--filter` for a list command; the
    examples of each join the command's help (`example` a template over docker's fields,
    `filter_example` a KEY=VALUE, `operand` what the command lists, if it takes one)."""
    command = parser.prog
    after = f" {operand}" if operand else ""
    parser.add_argument("-q", "--quiet", action=BoolFlag, help=quiet)
    parser.add_argument(
        "--format", type=list_format, default="table", metavar="FORMAT", help=FORMAT_HELP
    )
    examples = [
        f"{command} -q{after}",
        f"{command} --format '{example}'{after}",
        f"{command} --format 'table {example}'{after}",
    ]
    if filters is not None:
        parser.add_argument(
            "-f",
            "--filter",
            action="append",
            type=filter_type(filters),
            default=[],
            metavar="KEY=VALUE",
            help=f"only what matches (repeatable): {', '.join(filters)}",
        )
        examples.append(f"{command} --filter {filter_example}{after}")
    parser.epilog = (parser.epilog or "") + "".join(f"\n  {line}" for line in examples) + "\n"


def add_inspect_format(parser: argparse.ArgumentParser, example: str) -> None:
    """`-f/--format` of an inspect command: JSON (the default), or a template per object."""
    parser.add_argument(
        "-f",
        "--format",
        type=inspect_format,
        default="json",
        metavar="FORMAT",
        help="json (default) or a Go template over each object's JSON, e.g. '{{.name}}'",
    )
    parser.epilog = (parser.epilog or "") + f"\n  {parser.prog} --format '{example}'\n"


def select(
    items: Iterable[Item],
    filters: Sequence[tuple[str, str]],
    matchers: Mapping[str, Callable[[Item, str], bool]],
) -> list[Item]:
    """The items every filter key matches: a key given several values matches any of them
    (docker's `name=a --filter name=b`), except `label`, whose values must all match."""
    wanted: dict[str, list[str]] = {}
    for key, value in filters:
        wanted.setdefault(key, []).append(value)

    def keep(item: Item) -> bool:
        for key, values in wanted.items():
            test = matchers[key]
            combine = all if key in ALL_OF_FILTERS else any
            if not combine(test(item, value) for value in values):
                return False
        return True

    return [item for item in items if keep(item)]


def labels_match(labels: Mapping[str, str], value: str) -> bool:
    """docker's label filter: `KEY` (present) or `KEY=VALUE` (equal)."""
    key, sep, expected = value.partition("=")
    return key in labels and (not sep or labels[key] == expected)


def add_group(parent: Subcommands, name: str, help_: str, *, dest: str) -> Subcommands:
    """A command group (`node`, `service`, ...): its parser, holding the group's subcommands."""
    group = parent.add_parser(name, help=help_, description=help_)
    subcommands: Subcommands = group.add_subparsers(
        dest=dest, metavar="COMMAND", parser_class=UsageParser
    )
    subcommands.required = True
    return subcommands


def add_command(
    parent: Subcommands,
    name: str,
    handler: Command,
    help_: str,
    example: str,
    *,
    aliases: Sequence[str] = (),
) -> argparse.ArgumentParser:
    """A command that runs `handler` (also as `aliases`, docker's other names for it); it takes
    --data-dir, and its help ends with `example`."""
    parser: argparse.ArgumentParser = parent.add_parser(
        name,
        aliases=list(aliases),
        help=help_,
        description=help_,
        epilog=f"examples:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler)
    add_data_dir(parser)
    return parser


# ---------------------------------------------------------------------------- the local agent


def data_dir_path(args: argparse.Namespace) -> Path:
    """`--data-dir`, or the default (`$SWARMLET_DATA_DIR`, ...)."""
    from swarmlet.security.datadir_location import default_data_dir

    return Path(args.data_dir) if args.data_dir else default_data_dir()


def data_dir(args: argparse.Namespace) -> DataDir:
    """The data dir, for the commands that read or write it (identity, keys, pid)."""
    from swarmlet.security.datadir import DataDir

    return DataDir(data_dir_path(args))


def socket_path(args: argparse.Namespace) -> Path:
    """The agent's control socket: found without loading what reads the data dir's files."""
    from swarmlet.security.datadir_location import control_socket_path

    return control_socket_path(data_dir_path(args))


def client(args: argparse.Namespace) -> BlockingControlClient:
    from swarmlet.api.control_client import BlockingControlClient

    return BlockingControlClient(socket_path(args))


def call(args: argparse.Namespace, op: str, **kwargs: Any) -> Any:
    """One request to the local agent's control API; its result, or the error it raised."""
    return client(args).call(op, **kwargs)
