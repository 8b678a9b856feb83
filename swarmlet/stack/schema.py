"""Validation of one interpolated stack file against docker's compose schema v3.13.

Owns: the schema (package data ``config_schema_v3.13.json``, copied verbatim from docker/cli),
docker's custom formats (``ports``, ``expose``, ``duration``: ``cli/compose/schema/schema.go``)
and the translation of the most specific error to docker's wording
(``getMostSpecificError``/``getDescription``): ``must be a list``,
``Additional property profiles is not allowed``. The schema declares draft-04, so that is the
validator used. Must not know: normalisation or files on disk.

One deliberate relaxation (`_ACCEPTED_BEYOND_DOCKER`): a service's `depends_on` may also take
compose-spec's long syntax (`db: {condition: service_healthy}`), which docker's schema refuses
(moby/moby#46827) and swarmlet honours (`leader.depends_on`).
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from swarmlet.errors import StackError
from swarmlet.stack.goformat import parse_duration_ns
from swarmlet.stack.ports import parse_port_spec

_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("ports", raises=ValueError)
@_FORMATS.checks("expose", raises=ValueError)
def _is_port_spec(instance: object) -> bool:
    if isinstance(instance, bool) or not isinstance(instance, str | int | float):
        return True
    text = instance if isinstance(instance, str) else str(int(instance))
    parse_port_spec(text)
    return True


@_FORMATS.checks("duration", raises=ValueError)
def _is_duration(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    parse_duration_ns(instance)
    return True


# compose-spec's long `depends_on` (its schema's `service.depends_on`, without `restart`, which
# the converter refuses with its reason rather than the schema without one).
_DEPENDS_ON = {
    "oneOf": [
        {"$ref": "#/definitions/list_of_strings"},
        {
            "type": "object",
            "additionalProperties": False,
            "patternProperties": {
                "^[a-zA-Z0-9._-]+$": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "condition": {
                            "type": "string",
                            "enum": [
                                "service_started",
                                "service_healthy",
                                "service_completed_successfully",
                            ],
                        },
                        "restart": {"type": "boolean"},
                        "required": {"type": "boolean"},
                    },
                    "required": ["condition"],
                }
            },
        },
    ]
}


@functools.cache
def _validator() -> Any:
    text = resources.files("swarmlet.stack").joinpath("config_schema_v3.13.json").read_text()
    schema = json.loads(text)
    schema["definitions"]["service"]["properties"]["depends_on"] = _DEPENDS_ON
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft4Validator)
    return cls(schema, format_checker=_FORMATS)


def _field(error: ValidationError) -> str:
    # gojsonschema Field() is "(root)" or "services.web.ports.0"; we write list indices as
    # "[0]", like every other StackError path of the loader.
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _human_type(expected: Any) -> str:
    if isinstance(expected, list):
        names = [_human_type(t) for t in expected]
        return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
    return {"object": "mapping", "array": "list"}.get(expected, str(expected))


def _go_type_name(instance: Any) -> str:
    if isinstance(instance, bool):
        return "boolean"
    if isinstance(instance, int | float):
        return "number"
    if isinstance(instance, str):
        return "string"
    if isinstance(instance, list):
        return "list"
    if isinstance(instance, dict):
        return "mapping"
    return "null"


def _describe(error: ValidationError) -> str:
    validator = error.validator
    if validator == "type":
        return f"must be a {_human_type(error.validator_value)}"
    if validator == "additionalProperties":
        sub_schema: Any = error.schema
        instance: Any = error.instance
        extra = sorted(set(instance) - set(sub_schema.get("properties", {})))
        pattern_props = sub_schema.get("patternProperties", {})
        extra = [k for k in extra if not any(re.search(p, k) for p in pattern_props)]
        name = extra[0] if extra else "?"
        return f"Additional property {name} is not allowed"
    if validator == "required":
        return error.message.replace("'", "").replace(" is a required property", " is required")
    if validator == "enum":
        choices: Any = error.validator_value
        allowed = ", ".join(json.dumps(v) for v in choices)
        return f"must be one of the following: {allowed}"
    if validator == "format":
        return f"Does not match format '{error.validator_value}'"
    if validator == "oneOf":
        return "Must validate one and only one schema (oneOf)"
    if validator == "anyOf":
        return "Must validate at least one schema (anyOf)"
    if validator == "uniqueItems":
        return "array items must be unique"
    if validator in ("minimum", "maximum", "minItems", "maxItems", "minLength", "pattern"):
        return error.message
    return error.message


def _best_branch(error: ValidationError) -> list[ValidationError]:
    """gojsonschema merges only the errors of the best-scoring oneOf/anyOf branch; the branch
    whose type matched scores higher than one that failed on type."""
    branches: dict[Any, list[ValidationError]] = {}
    for sub in error.context or []:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    for subs in branches.values():
        if not any(s.validator == "type" and not s.relative_path for s in subs):
            return subs
    return next(iter(branches.values()), [])


def _flatten(errors: list[ValidationError]) -> list[ValidationError]:
    """gojsonschema lists the combinator error, then the errors of its best branch."""
    flat: list[ValidationError] = []
    for error in errors:
        flat.append(error)
        if error.validator in ("oneOf", "anyOf"):
            flat.extend(_flatten(_best_branch(error)))
    return flat


def validate(config: dict[str, Any], file: str) -> None:
    """Raise StackError(file, key path, docker's description) if `config` breaks the schema."""
    # gojsonschema walks object properties in sorted key order; ties keep the first error,
    # so sort by path to report the same service docker does (Kong corpus file: services.db).
    top = sorted(_validator().iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    errors = _flatten(top)
    if not errors:
        return

    def specificity(error: ValidationError) -> int:
        return len(error.absolute_path)

    best = 0
    for i, error in enumerate(errors):
        if specificity(error) > specificity(errors[best]) or (
            specificity(error) == specificity(errors[best])
            and error.validator == "type"
            and errors[best].validator != "type"
        ):
            best = i
    chosen = errors[best]
    description = _describe(chosen)
    if chosen.validator in ("oneOf", "anyOf") and best + 1 < len(errors):
        description = _describe(errors[best + 1])
    if chosen.validator == "type":
        description += f", got {_go_type_name(chosen.instance)} {_short(chosen.instance)}"
    field = _field(chosen)
    raise StackError(file, "" if field == "(root)" else field, description)


def _short(instance: Any) -> str:
    text = json.dumps(instance, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
