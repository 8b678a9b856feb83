"""Normalisation rules of the loader on small inline stacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from swarmlet.stack.loader import load_stack


def _load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> dict[str, Any]:
    stack = tmp_path / "stack.yml"
    stack.write_text(text)
    env = {"HOME": "/home/me"} if environ is None else environ
    return load_stack([stack], env).config


def test_version_defaults_to_3_13_when_absent_or_3(tmp_path: Path) -> None:
    assert _load(tmp_path, "services: {}\n")["version"] == "3.13"
    assert _load(tmp_path, "version: '3'\nservices: {}\n")["version"] == "3.13"
    assert _load(tmp_path, "version: '3.7'\nservices: {}\n")["version"] == "3.7"


def test_lists_become_maps_and_healthcheck_string_becomes_cmd_shell(tmp_path: Path) -> None:
    text = (
        "services:\n  web:\n    image: x\n    environment: [A=1, B]\n    labels: [l=v, e]\n"
        "    healthcheck:\n      test: curl -f http://localhost\n      interval: 90s\n"
    )
    web = _load(tmp_path, text)["services"]["web"]
    assert web["environment"] == {"A": "1", "B": None}
    assert web["labels"] == {"e": "", "l": "v"}
    assert web["healthcheck"] == {
        "test": ["CMD-SHELL", "curl -f http://localhost"],
        "interval": "1m30s",
    }


def test_unquoted_host_container_port_is_a_port_not_a_number(tmp_path: Path) -> None:
    web = _load(tmp_path, "services:\n  web:\n    image: x\n    ports:\n      - 80:80\n")
    assert web_ports(web) == [{"mode": "ingress", "target": 80, "published": 80, "protocol": "tcp"}]


def web_ports(config: dict[str, Any]) -> Any:
    return config["services"]["web"]["ports"]


def test_relative_and_home_paths_become_absolute(tmp_path: Path) -> None:
    text = (
        "services:\n  web:\n    image: x\n    volumes:\n      - ./data:/data\n"
        "      - ~/conf:/conf:ro\n      - .:/code\nconfigs:\n  c:\n    file: ./c.conf\n"
    )
    config = _load(tmp_path, text)
    sources = [v["source"] for v in config["services"]["web"]["volumes"]]
    assert sources == [str(tmp_path / "data"), "/home/me/conf", str(tmp_path)]
    assert config["configs"]["c"]["file"] == str(tmp_path / "c.conf")


def test_env_file_is_read_relative_to_the_stack_file(tmp_path: Path) -> None:
    (tmp_path / "app.env").write_text("# comment\nA=from_file\nB=from_file\nC\n")
    text = (
        "services:\n  web:\n    image: x\n    env_file: app.env\n    environment:\n      B: mine\n"
    )
    web = _load(tmp_path, text, {"C": "from_env"})["services"]["web"]
    assert web["environment"] == {"A": "from_file", "B": "mine", "C": "from_env"}
    assert web["env_file"] == ["app.env"]


def test_dot_env_fills_variables_the_environment_lacks(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TAG=1.0\nREPO=from_dotenv\n")
    text = "services:\n  web:\n    image: ${REPO}/app:${TAG}\n"
    config = _load(tmp_path, text, {"REPO": "from_env"})
    assert config["services"]["web"]["image"] == "from_env/app:1.0"


def test_anchors_merge_keys_and_extension_fields(tmp_path: Path) -> None:
    text = (
        "x-defaults: &defaults\n  image: base\n  labels: {a: '1'}\n"
        "services:\n  web:\n    <<: *defaults\n    image: web\n    x-note: hi\n"
    )
    config = _load(tmp_path, text)
    assert config["services"]["web"] == {"image": "web", "labels": {"a": "1"}, "x-note": "hi"}
    assert config["x-defaults"] == {"image": "base", "labels": {"a": "1"}}


def test_memory_becomes_bytes_and_external_gets_its_name(tmp_path: Path) -> None:
    text = (
        "services:\n  web:\n    image: x\n    deploy:\n      resources:\n        limits:\n"
        "          memory: 1.5G\nnetworks:\n  outside:\n    external: true\n"
    )
    config = _load(tmp_path, text)
    limits = config["services"]["web"]["deploy"]["resources"]["limits"]
    assert limits == {"memory": "1610612736"}
    assert config["networks"] == {"outside": {"name": "outside", "external": True}}


def test_deploy_warnings_list_unsupported_and_deprecated_keys(tmp_path: Path) -> None:
    stack = tmp_path / "s.yml"
    stack.write_text(
        "services:\n  web:\n    image: x\n    restart: always\n    build: .\n    expose: ['80']\n"
    )
    warnings = load_stack([stack], {}).warnings
    assert warnings[0] == "Ignoring unsupported options: build, restart"
    assert warnings[1].startswith("Ignoring deprecated options:\n\nexpose: Exposing ports")
