"""Go's side of the template engine (`cli.gotemplate`): its values, how Go's fmt prints them, and
the functions a template calls (text/template's builtins and docker's `basicFunctions`).

Pure. The values are what JSON decodes to (dict, list, str, int, float, bool, None), `NO_VALUE`
(a missing map key) and `Record`s (a list command's rows: Go structs in docker). Printing
follows Go's fmt `%v`: `map[a:1 b:2]` with sorted keys, `[a b c]`, `<nil>`, `<no value>`,
floats as Go prints a float64 (`2`, `0.5`, `1e+06`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from swarmlet.errors import UsageError


class TemplateError(UsageError):
    """A template that does not parse, uses what this engine lacks, or fails on the data: the
    command line was wrong (exit status 2)."""


class NoValue:
    """A missing map key: Go prints `<no value>`, and it is false."""

    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE = NoValue()


class Record(dict[str, Any]):
    """A row of a list command under docker's field names (a Go struct in docker): reading a
    field it lacks is an error. A callable value is a method taking arguments
    (`{{.Label "com.example"}}`); `{{json .}}` leaves methods out, as docker does."""

    def __init__(self, kind: str, fields: Mapping[str, Any]) -> None:
        super().__init__(fields)
        self.kind = kind


# ---------------------------------------------------------------------------- printing


def go_float(value: float) -> str:
    """A float64 as Go's `%v` prints it: the shortest digits that read back the same value,
    in %e form when the exponent is below -4 or at least 6 (`strconv`'s rule for 'g', -1)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0"
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + exponent  # where the decimal point falls in `digits`
    if point - 1 < -4 or point - 1 >= 6:
        e = point - 1
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if e < 0 else '+'}{abs(e):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def go_print(value: Any) -> str:
    """`value` as Go's fmt prints it with `%v`."""
    if isinstance(value, NoValue):
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, Record):
        return "{" + " ".join(go_print(v) for v in value.values() if not callable(v)) + "}"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{go_print(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_print(v) for v in value) + "]"
    return str(value)


def go_json(value: Any) -> str:
    """`value` as docker's `json` function encodes it: compact, HTML characters kept, maps in
    key order (a Record's fields sorted, as docker marshals its rows), no trailing newline."""
    return (
        json.dumps(_jsonable(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, NoValue):
        return None
    if isinstance(value, Record):
        return {k: _jsonable(value[k]) for k in sorted(value) if not callable(value[k])}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)  # Go's encoding/json writes 2.0 as 2
    return value


# ---------------------------------------------------------------------------- functions


def truth(value: Any) -> bool:
    """Go's template truth: false, 0, nil, and empty strings, lists and maps are false."""
    if isinstance(value, NoValue) or value is None:
        return False
    if isinstance(value, bool | int | float | str | list | tuple | Mapping):
        return bool(value)
    return True


def _string(value: Any, function: str) -> str:
    if not isinstance(value, str):
        raise TemplateError(
            f"error calling {function}: wrong type for value; expected string; got {go_type(value)}"
        )
    return value


def _integer(value: Any, function: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TemplateError(
            f"error calling {function}: wrong type for value; expected int; got {go_type(value)}"
        )
    return value


def go_type(value: Any) -> str:
    if isinstance(value, NoValue) or value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Record):
        return value.kind
    if isinstance(value, Mapping):
        return "map[string]interface {}"
    if isinstance(value, list | tuple):
        return "[]interface {}"
    return type(value).__name__


def _join(items: Any, separator: Any) -> str:
    if isinstance(items, NoValue) or items is None:
        return ""
    if not isinstance(items, list | tuple):
        raise TemplateError(
            f"error calling join: wrong type for value; expected []string; got {go_type(items)}"
        )
    return _string(separator, "join").join(go_print(item) for item in items)


def _pad(value: Any, prefix: Any, suffix: Any) -> str:
    text = _string(value, "pad")
    if not text:
        return text
    return " " * _integer(prefix, "pad") + text + " " * _integer(suffix, "pad")


def _truncate(value: Any, length: Any) -> str:
    text = _string(value, "truncate")
    n = _integer(length, "truncate")
    encoded = text.encode()
    # Go slices bytes: `source[:length]`.
    return text if len(encoded) < n else encoded[:n].decode(errors="ignore")


def _title(value: Any) -> str:
    """Go's strings.Title: upper-case each letter that follows a separator (in ASCII, anything
    but a letter, digit or underscore; beyond ASCII, spaces)."""
    out = []
    previous = " "
    for char in _string(value, "title"):
        if previous.isascii():
            separator = not (previous.isalnum() or previous == "_")
        else:
            separator = previous.isspace()
        out.append(char.upper() if separator else char)
        previous = char
    return "".join(out)


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, Mapping):
            item = item.get(key, NO_VALUE) if isinstance(key, str) else NO_VALUE
            if isinstance(item, NoValue):
                # docker renders typed maps first: a missing key is the zero value, "".
                return ""
        elif isinstance(item, list | tuple | str):
            # Go indexes a string's bytes: the result is a byte, which prints as a number.
            sequence = item.encode() if isinstance(item, str) else item
            index = _integer(key, "index")
            if not 0 <= index < len(sequence):
                raise TemplateError(f"error calling index: index out of range: {index}")
            item = sequence[index]
        else:
            raise TemplateError(f"error calling index: can't index item of type {go_type(item)}")
    return item


def _slice(item: Any, *bounds: Any) -> Any:
    if not isinstance(item, list | tuple | str):
        raise TemplateError(f"error calling slice: can't slice item of type {go_type(item)}")
    numbers = [_integer(b, "slice") for b in bounds]
    if len(numbers) > 2:
        raise TemplateError("error calling slice: too many slice indexes")
    start = numbers[0] if numbers else 0
    end = numbers[1] if len(numbers) > 1 else len(item)
    if not 0 <= start <= end <= len(item):
        raise TemplateError(f"error calling slice: index out of range: {start}:{end}")
    return item[start:end]


def _len(item: Any) -> int:
    if isinstance(item, str | list | tuple | Mapping):
        return len(item.encode()) if isinstance(item, str) else len(item)
    raise TemplateError(f"error calling len: len of type {go_type(item)}")


def _equal(a: Any, b: Any) -> bool:
    a, b = (None if isinstance(v, NoValue) else v for v in (a, b))
    if isinstance(a, bool) != isinstance(b, bool):
        return False  # Go: a bool equals no number
    return bool(a == b)


def _eq(first: Any, *others: Any) -> bool:
    if not others:
        raise TemplateError("error calling eq: missing argument for comparison")
    return any(_equal(first, other) for other in others)


def _order(name: str, test: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        numbers = (int, float)
        if isinstance(a, bool) or isinstance(b, bool):
            ok = False
        else:
            ok = (isinstance(a, numbers) and isinstance(b, numbers)) or (
                isinstance(a, str) and isinstance(b, str)
            )
        if not ok:
            raise TemplateError(f"error calling {name}: incompatible types for comparison")
        return test(a, b)

    return compare


def _sprint(*values: Any) -> str:
    # Go's fmt.Sprint: a space between operands when neither is a string.
    out = []
    for i, value in enumerate(values):
        if i and not isinstance(value, str) and not isinstance(values[i - 1], str):
            out.append(" ")
        out.append(go_print(value))
    return "".join(out)


def _sprintln(*values: Any) -> str:
    return " ".join(go_print(v) for v in values) + "\n"


_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*))?([a-zA-Z%])")


def _sprintf(form: Any, *values: Any) -> str:
    """Go's fmt.Sprintf for the verbs scripts use: %v %s %d %q %f %t %x %%, flags and width."""
    text = _string(form, "printf")
    arguments = list(values)
    out = []
    position = 0
    for match in _VERB.finditer(text):
        out.append(text[position : match.start()])
        position = match.end()
        flags, width, precision, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue
        if not arguments:
            out.append(f"%!{verb}(MISSING)")
            continue
        value = arguments.pop(0)
        if verb in ("v", "s"):
            rendered = go_print(value)
        elif verb == "q":
            rendered = json.dumps(go_print(value), ensure_ascii=False)
        elif verb == "d" and isinstance(value, int) and not isinstance(value, bool):
            rendered = str(value)
        elif verb == "t" and isinstance(value, bool):
            rendered = go_print(value)
        elif verb == "f" and isinstance(value, int | float) and not isinstance(value, bool):
            rendered = f"{value:.{int(precision) if precision else 6}f}"
        elif verb == "x" and isinstance(value, int) and not isinstance(value, bool):
            rendered = f"{value:x}"
        elif verb == "x" and isinstance(value, str):
            rendered = value.encode().hex()
        else:
            rendered = f"%!{verb}({go_type(value)}={go_print(value)})"
        if width and width != "*":
            if "-" in flags:
                rendered = rendered.ljust(int(width))
            elif "0" in flags and verb in ("d", "f", "x"):
                rendered = rendered.rjust(int(width), "0")
            else:
                rendered = rendered.rjust(int(width))
        out.append(rendered)
    out.append(text[position:])
    if arguments:
        out.append("%!(EXTRA " + ", ".join(f"{go_type(a)}={go_print(a)}" for a in arguments) + ")")
    return "".join(out)


def _split(value: Any, separator: Any) -> list[str]:
    text, sep = _string(value, "split"), _string(separator, "split")
    return list(text) if sep == "" else text.split(sep)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    # Go's text/template builtins (`and`, `or` are evaluated lazily by the executor).
    "and": lambda *a: a[-1],
    "or": lambda *a: a[-1],
    "not": lambda a: not truth(a),
    "len": _len,
    "index": _index,
    "slice": _slice,
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _order("lt", lambda a, b: a < b),
    "le": _order("le", lambda a, b: a <= b),
    "gt": _order("gt", lambda a, b: a > b),
    "ge": _order("ge", lambda a, b: a >= b),
    "print": _sprint,
    "printf": _sprintf,
    "println": _sprintln,
    # docker's (cli/templates): `basicFunctions`.
    "json": go_json,
    "split": _split,
    "join": _join,
    "title": _title,
    "lower": lambda v: _string(v, "lower").lower(),
    "upper": lambda v: _string(v, "upper").upper(),
    "pad": _pad,
    "truncate": _truncate,
}

# docker's `HeaderFunctions`: a table's header row names the column, whatever the cells do.
# They take strings, as docker's do (a column name is one): anything else is an error.
HEADER_FUNCTIONS: dict[str, Callable[..., Any]] = {
    **FUNCTIONS,
    "json": lambda v: _string(v, "json"),
    "split": lambda v, sep: _string(v, "split") + _string(sep, "split")[:0],
    "join": lambda v, sep: _string(v, "join") + _string(sep, "join")[:0],
    "title": lambda v: _string(v, "title"),
    "lower": lambda v: _string(v, "lower"),
    "upper": lambda v: _string(v, "upper"),
    "truncate": lambda v, n: _string(v, "truncate") + str(_integer(n, "truncate"))[:0],
}
