"""Bad stack files: every error names the file, the key path and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmlet.errors import StackError
from swarmlet.stack.loader import load_stack

ENV = {"HOME": "/home/user"}


def _load_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> StackError:
    stack = tmp_path / "web.yml"
    stack.write_text(text)
    with pytest.raises(StackError) as caught:
        load_stack([stack], environ if environ is not None else ENV)
    assert caught.value.file == str(stack)
    return caught.value


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    error = _load_error(tmp_path, "services:\n  web:\n    image: [x\n")
    assert "line 4" in error.message
    assert error.path == ""


def test_duplicate_key_is_an_error_with_its_line(tmp_path: Path) -> None:
    error = _load_error(tmp_path, "services:\n  web:\n    image: a\n    image: b\n")
    assert "duplicate key 'image'" in error.message
    assert "line 4" in error.message


def test_top_level_list_is_rejected(tmp_path: Path) -> None:
    error = _load_error(tmp_path, "- a\n- b\n")
    assert error.message == "top-level object must be a mapping"


def test_non_string_key_names_its_path(tmp_path: Path) -> None:
    error = _load_error(tmp_path, "services:\n  web:\n    image: x\n    labels:\n      1: a\n")
    assert error.path == "services.web.labels"
    assert "non-string key" in error.message


def test_wrong_type_says_what_was_expected(tmp_path: Path) -> None:
    text = "services:\n  api:\n    image: x\n    deploy:\n      replicas: three\n"
    error = _load_error(tmp_path, text)
    assert error.path == "services.api.deploy.replicas"
    assert error.message == 'must be a integer, got string "three"'
    assert str(error) == f"{tmp_path / 'web.yml'}: services.api.deploy.replicas: {error.message}"


def test_unknown_service_key_is_rejected_like_docker(tmp_path: Path) -> None:
    error = _load_error(tmp_path, "services:\n  web:\n    image: x\n    bogus: 1\n")
    assert error.path == "services.web"
    assert error.message == "Additional property bogus is not allowed"


def test_unknown_top_level_key_is_rejected(tmp_path: Path) -> None:
    error = _load_error(tmp_path, "services: {}\nfoo: 1\n")
    assert error.path == ""
    assert error.message == "Additional property foo is not allowed"


def test_bad_short_port_fails_the_ports_format(tmp_path: Path) -> None:
    error = _load_error(tmp_path, "services:\n  web:\n    image: x\n    ports:\n      - 'abc:80'\n")
    assert error.path == "services.web.ports[0]"
    assert error.message == "Does not match format 'ports'"


def test_bad_duration_fails_the_duration_format(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: x\n    stop_grace_period: 10 seconds\n"
    error = _load_error(tmp_path, text)
    assert error.path == "services.web.stop_grace_period"
    assert error.message == "Does not match format 'duration'"


def test_undefined_required_variable_names_variable_and_key(tmp_path: Path) -> None:
    error = _load_error(tmp_path, "services:\n  web:\n    image: ${TAG?please set TAG}\n")
    assert error.path == "services.web.image"
    assert "required variable TAG is missing a value: please set TAG" in error.message


def test_empty_required_non_empty_variable_is_an_error(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: x\n    environment:\n      - A=${TAG:?need tag}\n"
    error = _load_error(tmp_path, text, {"TAG": ""})
    assert error.path == "services.web.environment[0]"
    assert "required variable TAG is missing a value: need tag" in error.message


def test_invalid_template_is_an_error(tmp_path: Path) -> None:
    error = _load_error(tmp_path, "services:\n  web:\n    image: ${}\n")
    assert error.path == "services.web.image"
    assert "Invalid template" in error.message


def test_interpolated_replicas_that_is_not_a_number_fails_the_cast(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: x\n    deploy:\n      replicas: ${N}\n"
    error = _load_error(tmp_path, text, {"N": "many"})
    assert error.path == "services.web.deploy.replicas"
    assert "failed to cast to expected type" in error.message


def test_missing_env_file_names_the_file(tmp_path: Path) -> None:
    error = _load_error(tmp_path, "services:\n  web:\n    image: x\n    env_file: missing.env\n")
    assert error.path == "services.web.env_file[0]"
    assert str(tmp_path / "missing.env") in error.message


def test_env_file_name_with_whitespace_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "bad.env").write_text("MY VAR=1\n")
    error = _load_error(tmp_path, "services:\n  web:\n    image: x\n    env_file: bad.env\n")
    assert "contains whitespaces" in error.message


def test_forbidden_property_is_rejected_with_dockers_advice(tmp_path: Path) -> None:
    error = _load_error(tmp_path, "services:\n  web:\n    image: x\n    mem_limit: 1g\n")
    assert error.path == "services.web.mem_limit"
    assert "Compose file contains unsupported options" in error.message
    assert "mem_limit: Set resource limits using deploy.resources" in error.message


def test_external_volume_with_driver_conflicts(tmp_path: Path) -> None:
    text = "services: {}\nvolumes:\n  v:\n    external: true\n    driver: foo\n"
    error = _load_error(tmp_path, text)
    assert error.path == "volumes.v"
    assert 'conflicting parameters "external" and "driver"' in error.message


def test_bad_memory_size_names_the_key(tmp_path: Path) -> None:
    text = (
        "services:\n  web:\n    image: x\n    deploy:\n      resources:\n"
        "        limits:\n          memory: 1 gigabyte\n"
    )
    error = _load_error(tmp_path, text)
    assert error.path == "services.web.deploy.resources.limits.memory"
    assert "invalid size" in error.message


def test_boolean_environment_value_must_be_quoted(tmp_path: Path) -> None:
    error = _load_error(
        tmp_path, "services:\n  web:\n    image: x\n    environment:\n      A: yes\n"
    )
    assert error.path == "services.web.environment.A"
    assert error.message.startswith("must be a string, number or null")


def test_version_mismatch_between_files_is_an_error(tmp_path: Path) -> None:
    first, second = tmp_path / "a.yml", tmp_path / "b.yml"
    first.write_text("version: '3.8'\nservices: {}\n")
    second.write_text("version: '3.9'\nservices: {}\n")
    with pytest.raises(StackError) as caught:
        load_stack([first, second], ENV)
    assert caught.value.file == str(second)
    assert "version mismatched" in caught.value.message


def test_missing_stack_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="cannot read stack file"):
        load_stack([tmp_path / "nope.yml"], ENV)


def test_no_files_is_an_error() -> None:
    with pytest.raises(StackError, match="No files specified"):
        load_stack([], ENV)


def test_forbidden_properties_of_all_services_are_listed(tmp_path: Path) -> None:
    text = (
        "services:\n  a:\n    image: x\n    volumes_from: [b]\n  b:\n    image: x\n    extends: c\n"
    )
    error = _load_error(tmp_path, text)
    assert error.path == "services.a.volumes_from"
    assert "extends: Support for `extends`" in error.message
    assert "volumes_from: To share a volume" in error.message


@pytest.mark.parametrize("version", ["2.4", "4", "3.14"])
def test_unsupported_version_is_rejected(tmp_path: Path, version: str) -> None:
    error = _load_error(tmp_path, f"version: '{version}'\nservices: {{}}\n")
    assert error.path == "version"
    assert error.message == f"unsupported Compose file version: {version}"


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    error = _load_error(tmp_path, "\n".join(lines) + "\nservices: {}\n")
    assert error.message == "document contains excessive aliasing"


def test_non_utf8_env_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "bin.env").write_bytes(b"A=\xff\xfe\n")
    error = _load_error(tmp_path, "services:\n  web:\n    image: x\n    env_file: bin.env\n")
    assert error.path == "services.web.env_file[0]"
    assert "not UTF-8" in error.message
