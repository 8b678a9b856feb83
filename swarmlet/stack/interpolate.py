"""Variable substitution in stack files, as docker/cli does it.

Owns: ``${VAR}``, ``$VAR``, ``${VAR:-d}``, ``${VAR-d}``, ``${VAR:?e}``, ``${VAR?e}``, ``$$``
(docker/cli ``cli/compose/template/template.go``), the recursive walk over a parsed file and
the casts back to int/float/bool for the keys docker lists in
``cli/compose/loader/interpolate.go`` (``interpolateTypeCastMapping``).

Decisions: an unset variable without default becomes "" silently. docker/cli's template
package prints nothing for it (the corpus runs show empty stderr), so neither do we.
Error paths use ``[i]`` list indices (``services.web.environment[0]``) where docker prints
``[]``: the index tells the user which item is wrong.
Must not know: schema, files on disk (the caller passes a ready environment mapping).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from swarmlet.errors import StackError

# template.go: delimiter "\$", subst "[_a-z][_a-z0-9]*(?::?[-?][^}]*)?", case-insensitive.
_SUBST = r"[_a-z][_a-z0-9]*(?::?[-?][^}]*)?"
_PATTERN = re.compile(
    rf"\$(?:(?P<escaped>\$)|(?P<named>{_SUBST})|{{(?P<braced>{_SUBST})}}|(?P<invalid>))",
    re.IGNORECASE,
)


class TemplateError(ValueError):
    """A variable reference is malformed or a required variable is missing."""


def substitute(template: str, environ: Mapping[str, str]) -> str:
    """template.Substitute: replace every variable reference in `template`."""

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("named") or match.group("braced")
        if not name:
            raise TemplateError(f"Invalid template: {template!r}")
        return _apply(name, environ)

    return _PATTERN.sub(replace, template)


def _apply(substitution: str, environ: Mapping[str, str]) -> str:
    # DefaultSubstituteFuncs order: softDefault, hardDefault, requiredNonEmpty, required.
    if ":-" in substitution:
        name, default = substitution.split(":-", 1)
        value = environ.get(name)
        return value if value else default
    if "-" in substitution:
        name, default = substitution.split("-", 1)
        return environ.get(name, default)
    if ":?" in substitution:
        name, message = substitution.split(":?", 1)
        if not environ.get(name):
            raise TemplateError(f"required variable {name} is missing a value: {message}")
        return environ[name]
    if "?" in substitution:
        name, message = substitution.split("?", 1)
        if name not in environ:
            raise TemplateError(f"required variable {name} is missing a value: {message}")
        return environ[name]
    return environ.get(substitution, "")


def _to_int(value: str) -> Any:
    # strconv.Atoi
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        raise ValueError(f'strconv.Atoi: parsing "{value}": invalid syntax')
    return int(value)


def _to_float(value: str) -> Any:
    try:
        return float(value)
    except ValueError as exc:
        raise ValueError(f'strconv.ParseFloat: parsing "{value}": invalid syntax') from exc


def _to_bool(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("y", "yes", "true", "on"):
        return True
    if lowered in ("n", "no", "false", "off"):
        return False
    raise ValueError(f"invalid boolean: {value}")


_Cast = Callable[[str], Any]
_S = "services.*."
# loader/interpolate.go interpolateTypeCastMapping ("[]" is a list item, "*" any key).
_CASTS: tuple[tuple[str, _Cast], ...] = (
    (_S + "configs.[].mode", _to_int),
    (_S + "secrets.[].mode", _to_int),
    (_S + "healthcheck.retries", _to_int),
    (_S + "healthcheck.disable", _to_bool),
    (_S + "deploy.replicas", _to_int),
    (_S + "deploy.update_config.parallelism", _to_int),
    (_S + "deploy.update_config.max_failure_ratio", _to_float),
    (_S + "deploy.rollback_config.parallelism", _to_int),
    (_S + "deploy.rollback_config.max_failure_ratio", _to_float),
    (_S + "deploy.restart_policy.max_attempts", _to_int),
    (_S + "deploy.placement.max_replicas_per_node", _to_int),
    (_S + "ports.[].target", _to_int),
    (_S + "ports.[].published", _to_int),
    (_S + "ulimits.*", _to_int),
    (_S + "ulimits.*.hard", _to_int),
    (_S + "ulimits.*.soft", _to_int),
    (_S + "privileged", _to_bool),
    (_S + "read_only", _to_bool),
    (_S + "stdin_open", _to_bool),
    (_S + "tty", _to_bool),
    (_S + "volumes.[].read_only", _to_bool),
    (_S + "volumes.[].volume.nocopy", _to_bool),
    ("networks.*.external", _to_bool),
    ("networks.*.internal", _to_bool),
    ("networks.*.attachable", _to_bool),
    ("volumes.*.external", _to_bool),
    ("secrets.*.external", _to_bool),
    ("configs.*.external", _to_bool),
)


def _caster(pattern_parts: tuple[str, ...]) -> _Cast | None:
    for pattern, cast in _CASTS:
        parts = pattern.split(".")
        if len(parts) == len(pattern_parts) and all(
            want in ("*", got) for want, got in zip(parts, pattern_parts, strict=True)
        ):
            return cast
    return None


def interpolate_config(
    config: dict[str, Any], environ: Mapping[str, str], file: str
) -> dict[str, Any]:
    """Substitute variables in every string of a parsed file; raise StackError on error."""
    out = _walk(config, (), (), environ, file)
    assert isinstance(out, dict)
    return out


def _walk(
    value: Any,
    match_path: tuple[str, ...],
    shown_path: tuple[str, ...],
    environ: Mapping[str, str],
    file: str,
) -> Any:
    if isinstance(value, dict):
        return {
            key: _walk(item, (*match_path, key), (*shown_path, key), environ, file)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [
            _walk(
                item,
                (*match_path, "[]"),
                (*shown_path[:-1], f"{shown_path[-1]}[{i}]"),
                environ,
                file,
            )
            if shown_path
            else _walk(item, (*match_path, "[]"), (f"[{i}]",), environ, file)
            for i, item in enumerate(value)
        ]
    if not isinstance(value, str):
        return value
    key_path = ".".join(shown_path)
    try:
        new_value = substitute(value, environ)
    except TemplateError as exc:
        raise StackError(
            file,
            key_path,
            f"invalid interpolation format: {exc}; you may need to escape any $ with another $",
        ) from exc
    if new_value == value:
        return value
    cast = _caster(match_path)
    if cast is None:
        return new_value
    try:
        return cast(new_value)
    except ValueError as exc:
        raise StackError(file, key_path, f"failed to cast to expected type: {exc}") from exc
