"""``env_file`` and ``.env`` parsing (docker/cli ``opts/envfile.go`` ``ParseEnvFile``).

Owns: turning the text of an env file into ordered ``(name, value | None)`` pairs. A line
``NAME`` without ``=`` takes NAME from the given environment, or stays valueless (None).
Lines starting with ``#`` and blank lines are skipped; a name with whitespace is an error.
"""

from __future__ import annotations

from collections.abc import Mapping


def parse_env_text(text: str, environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """Parse env-file text; raise ValueError naming the bad line."""
    pairs: list[tuple[str, str | None]] = []
    text = text.removeprefix("\ufeff")
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.lstrip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.lstrip()
        if not name:
            raise ValueError(f"no variable name on line '{raw_line}' (line {number})")
        if any(ch.isspace() for ch in name):
            raise ValueError(f"variable '{name}' contains whitespaces (line {number})")
        if sep:
            pairs.append((name, value))
        elif name in environ:
            pairs.append((name, environ[name]))
        else:
            pairs.append((name, None))
    return pairs
