"""Go value semantics the compose loader depends on, as pure functions.

Owns: ``time.ParseDuration`` / ``time.Duration.String``, ``fmt.Sprint`` of YAML scalars,
``go-units.RAMInBytes``, ``google/shlex.Split`` and yaml.v2's map-key order. Each function
cites the Go source it mirrors. Raises ValueError on invalid input; callers add the key path.
"""

from __future__ import annotations

import functools
import math
import re
import shlex
from typing import Any

_DURATION_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # U+00B5 micro sign
    "\u03bcs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([a-zµμ]+)")


def parse_duration_ns(text: str) -> int:
    """Go time.ParseDuration: ``[-+]?([0-9]*(\\.[0-9]*)?[a-z]+)+``, or ``0``."""
    s = text
    sign = 1
    if s[:1] in ("-", "+"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        match = _DURATION_PART.match(s, pos)
        if not match or match.group(1) in ("", "."):
            raise ValueError(f'time: invalid duration "{text}"')
        unit = match.group(2)
        if unit not in _DURATION_UNITS_NS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{text}"')
        total += float(match.group(1)) * _DURATION_UNITS_NS[unit]
        pos = match.end()
    return sign * round(total)


def _fmt_frac(value: int, precision_digits: int) -> str:
    whole, frac = divmod(value, 10**precision_digits)
    frac_text = str(frac).rjust(precision_digits, "0").rstrip("0")
    return f"{whole}.{frac_text}" if frac_text else str(whole)


def format_duration(ns: int) -> str:
    """Go time.Duration.String: ``1m0s``, ``1h30m0s``, ``1.5s``, ``500ms``, ``0s``."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 1_000_000_000:
        if u < 1_000:
            return f"{sign}{u}ns"
        if u < 1_000_000:
            return f"{sign}{_fmt_frac(u, 3)}\u00b5s"
        return f"{sign}{_fmt_frac(u, 6)}ms"
    hours, rest = divmod(u, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds = _fmt_frac(rest, 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return f"{sign}{seconds}"


def go_sprint(value: Any) -> str:
    """fmt.Sprint of a value decoded from YAML (bool, int, float, str)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    return str(value)


def _go_float(value: float) -> str:
    # fmt %v for float64 is %g with the shortest repr; exponent when exp < -4 || exp >= 21.
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)))
    if -4 <= exponent < 21:
        text = repr(value)
        if "e" in text:  # Python switches to exponent form at 1e16
            text = f"{value:.0f}" if value.is_integer() else format(value, "f")
        return text[:-2] if text.endswith(".0") else text
    mantissa, exp = repr(value).split("e") if "e" in repr(value) else (repr(value), "0")
    exp_int = int(exp)
    mantissa = mantissa[:-2] if mantissa.endswith(".0") else mantissa
    return f"{mantissa}e{'+' if exp_int >= 0 else '-'}{abs(exp_int):02d}"


_RAM = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_RAM_MULT = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def ram_in_bytes(text: str) -> int:
    """go-units RAMInBytes: binary multipliers (``1.5G`` -> 1610612736)."""
    match = _RAM.match(text)
    if not match:
        raise ValueError(f"invalid size: '{text}'")
    try:
        size = float(match.group(1))
    except ValueError as exc:
        raise ValueError(f"invalid size: '{text}'") from exc
    unit = (match.group(2) or "").lower()
    return int(size * _RAM_MULT.get(unit, 1))


def shell_split(text: str) -> list[str]:
    """google/shlex.Split (POSIX-like word splitting, quotes and backslashes)."""
    return shlex.split(text, comments=False, posix=True)


def _yaml_key_less(a: str, b: str) -> bool:
    # gopkg.in/yaml sorter.go keyList.Less, for string keys.
    for i in range(min(len(a), len(b))):
        ca, cb = a[i], b[i]
        if ca == cb:
            continue
        al, bl = ca.isalpha(), cb.isalpha()
        if al and bl:
            return ca < cb
        if al or bl:
            return bl
        an = bn = 0
        if ca == "0" or cb == "0":
            j = i - 1
            while j >= 0 and a[j].isdigit():
                if a[j] != "0":
                    an = bn = 1
                    break
                j -= 1
        ai = i
        while ai < len(a) and a[ai].isdigit():
            an = an * 10 + int(a[ai])
            ai += 1
        bi = i
        while bi < len(b) and b[bi].isdigit():
            bn = bn * 10 + int(b[bi])
            bi += 1
        if an != bn:
            return an < bn
        if ai != bi:
            return ai < bi
        return ca < cb
    return len(a) < len(b)


def _cmp(a: str, b: str) -> int:
    if _yaml_key_less(a, b):
        return -1
    if _yaml_key_less(b, a):
        return 1
    return 0


def sorted_map(mapping: dict[str, Any]) -> dict[str, Any]:
    """A Go map as yaml.Marshal writes it: keys in yaml's natural order."""
    return {key: mapping[key] for key in sorted(mapping, key=functools.cmp_to_key(_cmp))}
