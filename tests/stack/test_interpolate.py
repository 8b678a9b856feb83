"""Variable substitution, table-tested against docker/cli template.go semantics."""

from __future__ import annotations

import pytest

from swarmlet.stack.interpolate import TemplateError, interpolate_config, substitute

ENV = {"SET": "value", "EMPTY": ""}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${SET}", "value"),
        ("$SET", "value"),
        ("pre-${SET}-post", "pre-value-post"),
        ("${UNSET}", ""),
        ("$UNSET", ""),
        ("${UNSET:-default}", "default"),
        ("${EMPTY:-default}", "default"),
        ("${SET:-default}", "value"),
        ("${UNSET-default}", "default"),
        ("${EMPTY-default}", ""),
        ("${SET?err}", "value"),
        ("${EMPTY?err}", ""),
        ("${SET:?err}", "value"),
        ("$$", "$"),
        ("$${SET}", "${SET}"),
        ("$$(cat $$FILE)", "$(cat $FILE)"),
        ("${UNSET:-$2y$05$abc}", "$2y$05$abc"),
        ("{{.Node.ID}}", "{{.Node.ID}}"),
    ],
)
def test_substitute_matches_docker(template: str, expected: str) -> None:
    assert substitute(template, ENV) == expected


@pytest.mark.parametrize(
    "template", ["${UNSET?needed}", "${UNSET:?needed}", "${EMPTY:?needed}", "${}", "$", "${-x}"]
)
def test_substitute_rejects_missing_required_or_invalid(template: str) -> None:
    with pytest.raises(TemplateError):
        substitute(template, ENV)


def test_required_error_carries_variable_and_message() -> None:
    with pytest.raises(TemplateError, match="required variable UNSET is missing a value: needed"):
        substitute("${UNSET?needed}", ENV)


def test_interpolated_typed_keys_are_cast_back() -> None:
    raw = {
        "services": {
            "web": {
                "deploy": {"replicas": "${N}"},
                "read_only": "${RO}",
                "ports": [{"target": "${P}"}],
                "image": "${N}",
            }
        },
        "networks": {"n": {"external": "${RO}"}},
    }
    out = interpolate_config(raw, {"N": "3", "RO": "yes", "P": "80"}, "f.yml")
    web = out["services"]["web"]
    assert web["deploy"]["replicas"] == 3
    assert web["read_only"] is True
    assert web["ports"] == [{"target": 80}]
    assert web["image"] == "3"  # not a typed key: stays a string
    assert out["networks"]["n"]["external"] is True


def test_unchanged_strings_are_not_cast() -> None:
    raw = {"services": {"web": {"deploy": {"replicas": "three"}}}}
    assert interpolate_config(raw, {}, "f.yml") == raw
