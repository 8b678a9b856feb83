"""cli.registry_auth: the client's credential for an image's registry, read from a docker config
file as docker reads it; what swarmlet cannot use is refused with the reason."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from swarmlet.cli.registry_auth import credential_for
from swarmlet.errors import UsageError
from swarmlet.executor.registry_auth import RegistryCredential

IMAGE = "127.0.0.1:5000/web:1"


def _env(tmp_path: Path, config: object) -> dict[str, str]:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return {"DOCKER_CONFIG": str(tmp_path)}


def _auth(pair: str) -> str:
    return base64.b64encode(pair.encode()).decode()


@pytest.mark.parametrize(
    ("key", "image", "registry"),
    [
        ("127.0.0.1:5000", IMAGE, "127.0.0.1:5000"),
        ("http://127.0.0.1:5000", IMAGE, "127.0.0.1:5000"),
        ("https://127.0.0.1:5000/v1/", IMAGE, "127.0.0.1:5000"),
        ("https://index.docker.io/v1/", "swarmlet/web:1", "docker.io"),
        ("ghcr.io", "ghcr.io/a/b:2", "ghcr.io"),
    ],
)
def test_the_auth_entry_of_the_image_s_registry_is_read(
    tmp_path: Path, key: str, image: str, registry: str
) -> None:
    env = _env(tmp_path, {"auths": {key: {"auth": _auth("u:p:with:colons")}}})
    assert credential_for(image, env) == RegistryCredential(registry, "u", "p:with:colons")


def test_username_and_password_fields_are_read_too(tmp_path: Path) -> None:
    env = _env(tmp_path, {"auths": {"127.0.0.1:5000": {"username": "u", "password": "p"}}})
    assert credential_for(IMAGE, env) == RegistryCredential("127.0.0.1:5000", "u", "p")


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"auths": {}},
        {"auths": {"127.0.0.1:5001": {"auth": _auth("u:p")}}},  # another port, another registry
        {"auths": {"127.0.0.1:5000": {}}},  # what a credential store leaves behind
    ],
)
def test_no_entry_for_the_registry_is_no_credential(tmp_path: Path, config: object) -> None:
    assert credential_for(IMAGE, _env(tmp_path, config)) is None


def test_a_missing_config_file_is_no_credential(tmp_path: Path) -> None:
    assert credential_for(IMAGE, {"DOCKER_CONFIG": str(tmp_path / "none")}) is None


@pytest.mark.parametrize(
    ("config", "refusal"),
    [
        ({"credsStore": "desktop", "auths": {}}, "credential store"),
        ({"credHelpers": {"127.0.0.1:5000": "pass"}}, "credential helper"),
        ({"auths": {"127.0.0.1:5000": {"identitytoken": "t"}}}, "identity tokens"),
        ({"auths": {"127.0.0.1:5000": {"auth": "not base64!"}}}, "not base64"),
        ({"auths": {"127.0.0.1:5000": {"auth": _auth("no-colon")}}}, "user:password"),
        ({"auths": []}, "not an object"),
        ([], "not a docker config file"),
    ],
)
def test_what_swarmlet_cannot_use_is_refused_with_the_reason(
    tmp_path: Path, config: object, refusal: str
) -> None:
    with pytest.raises(UsageError, match=refusal):
        credential_for(IMAGE, _env(tmp_path, config))


def test_a_config_that_is_not_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(UsageError, match="is not JSON"):
        credential_for(IMAGE, {"DOCKER_CONFIG": str(tmp_path)})


def test_a_helper_for_another_registry_does_not_matter(tmp_path: Path) -> None:
    config = {
        "credHelpers": {"ghcr.io": "pass"},
        "auths": {"127.0.0.1:5000": {"auth": _auth("u:p")}},
    }
    assert credential_for(IMAGE, _env(tmp_path, config)) is not None
