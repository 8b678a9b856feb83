"""What one stack conversion carries through all its parts, and how it reads scalar values.

Owns: the stack's name and how it scopes the names of what the stack defines (``STACK_KEY``, as
docker's ``convert.Namespace.Scope``), the compose file errors are reported against, the list of
warnings collected in the order they arise, and the readers of the scalars a normalised document
holds (whole numbers, positive numbers, Go durations), each raising StackError(file, key path,
what) with the key path it is given.

Invariant: every error of the conversion is made by `ConvertContext.error`, so each names the file
and the key path. Knows nothing of services, deploy sections or named objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from swarmlet.errors import StackError
from swarmlet.stack.goformat import parse_duration_ns

# A mapping of the normalised stack document (the loader's output).
Obj = dict[str, Any]


def string_map(value: Any) -> dict[str, str]:
    """A document mapping of labels or options as strings (a missing value is "")."""
    return {str(k): "" if v is None else str(v) for k, v in (value or {}).items()}


@dataclass(frozen=True, slots=True)
class ConvertContext:
    stack: str
    file: str
    warnings: list[str]  # appended to as the conversion goes, in document order

    def error(self, path: str, message: str) -> StackError:
        return StackError(self.file, path, message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def scope(self, key: str) -> str:
        return f"{self.stack}_{key}"  # convert.Namespace.Scope

    def whole_number(self, value: Any, where: str) -> int:
        if isinstance(value, bool):
            raise self.error(where, f"expected a whole number, got {value!r}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise self.error(where, f"expected a whole number, got {value!r}") from None
        if number < 0:
            raise self.error(where, f"must be 0 or more, got {number}")
        return number

    def positive(self, value: Any, where: str) -> float:
        if value is None:
            return 0.0
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.error(where, f"expected a number above 0, got {value!r}")
        return float(value)

    def duration_s(self, value: Any, where: str, default: float = 0.0) -> float:
        # Normalised durations are Go strings ("1m0s"); parse them as Go does.
        if value is None:
            return default
        try:
            ns = parse_duration_ns(str(value))
        except ValueError as exc:
            raise self.error(where, str(exc)) from exc
        if ns < 0:
            raise self.error(where, f"must not be negative, got {value}")
        return ns / 1e9
