"""docker/cli's own goldens for its full example (working dir /foo, HOME /bar, QUX set as in
``TestMarshallConfig``): rendered YAML and JSON must be byte-identical."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from swarmlet.stack.loader import LoadedStack, load_stack
from swarmlet.stack.render import render_config

from .corpus import DOCKER_CLI, STACKS


@pytest.fixture
def full_example(tmp_path: Path) -> LoadedStack:
    stack = tmp_path / "full-example.yml"
    shutil.copyfile(STACKS / "docker__cli__cli_compose_loader_full-example.yml", stack)
    for env_file in ("example1.env", "example2.env"):
        shutil.copyfile(DOCKER_CLI / env_file, tmp_path / env_file)
    environ = {"HOME": "/bar", "QUX": "qux_from_environment"}
    return load_stack([stack], environ, workdir=Path("/foo"))


def test_full_example_yaml_matches_docker_cli_golden(full_example: LoadedStack) -> None:
    golden = (DOCKER_CLI / "full-example.yaml.golden").read_text()
    assert render_config(full_example.config, "yaml") == golden


def test_full_example_json_matches_docker_cli_golden(full_example: LoadedStack) -> None:
    golden = (DOCKER_CLI / "full-example.json.golden").read_text()
    assert render_config(full_example.config, "json") == golden


def test_environment_variable_fills_valueless_env_entry(full_example: LoadedStack) -> None:
    environment = full_example.config["services"]["foo"]["environment"]
    assert environment["QUX"] == "qux_from_environment"
    assert environment["BAR"] == "bar_from_env_file_2"
    assert environment["BAZ"] == "baz_from_service_def"


def test_render_rejects_unknown_format(full_example: LoadedStack) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render_config(full_example.config, "toml")  # type: ignore[arg-type]
