"""`--with-registry-auth`: the client's credential for an image's registry, read as docker's CLI
reads it, from `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`).

What is read: `auths.<registry>.auth`, base64 `user:password` (what `docker login` writes when
no credential store is configured), or its `username` and `password` fields. The entry's key
matches as docker matches it: a bare host (`127.0.0.1:5000`) or a URL naming it
(`https://127.0.0.1:5000/v1/`); Docker Hub's is `https://index.docker.io/v1/`.

What is refused, clearly: a credential helper (`credHelpers.<registry>`) or a credential store
(`credsStore`), which swarmlet does not run; an `identitytoken` (OAuth) entry; a config file
that is not JSON. A missing file or entry is no credential (None): `service create|update`
refuse that themselves, a stack deploys such a service without one, as docker does.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from swarmlet.errors import UsageError
from swarmlet.executor.registry_auth import DOCKER_HUB, RegistryCredential, registry_of

_DOCKER_HUB_KEYS = ("index.docker.io", "docker.io", "registry-1.docker.io")


def config_path(environ: Mapping[str, str]) -> Path:
    directory = environ.get("DOCKER_CONFIG") or str(Path(environ.get("HOME", "~")) / ".docker")
    return Path(directory).expanduser() / "config.json"


def _host_of_key(key: str) -> str:
    """docker's ConvertToHostname: `https://host/v1/` -> `host`."""
    if "://" in key:
        key = urllib.parse.urlsplit(key).netloc
    return key.split("/", 1)[0]


def _matches(key: str, registry: str) -> bool:
    host = _host_of_key(key)
    if registry == DOCKER_HUB:
        return host in _DOCKER_HUB_KEYS
    return host == registry


def credential_for(
    image: str, environ: Mapping[str, str] | None = None
) -> RegistryCredential | None:
    """The client's credential for `image`'s registry; None if it has none. UsageError for
    what swarmlet cannot use (see the docstring)."""
    path = config_path(os.environ if environ is None else environ)
    registry = registry_of(image)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"--with-registry-auth: cannot read {path}: {exc.strerror}") from None
    try:
        config: Any = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--with-registry-auth: {path} is not JSON ({exc})") from None
    if not isinstance(config, dict):
        raise UsageError(f"--with-registry-auth: {path} is not a docker config file")
    helpers = config.get("credHelpers") or {}
    if isinstance(helpers, dict) and any(_matches(k, registry) for k in helpers):
        raise UsageError(
            f"--with-registry-auth: {path} keeps the credential for {registry} in a credential "
            "helper (credHelpers), which swarmlet does not support; log in with "
            f"`docker --config DIR login {registry}` to a config without credHelpers/credsStore "
            "and pass DOCKER_CONFIG=DIR"
        )
    if config.get("credsStore"):
        raise UsageError(
            f"--with-registry-auth: {path} keeps credentials in a credential store "
            f"(credsStore: {config['credsStore']}), which swarmlet does not support; log in "
            f"with `docker --config DIR login {registry}` to a config without credsStore and "
            "pass DOCKER_CONFIG=DIR"
        )
    auths = config.get("auths", {})
    if not isinstance(auths, dict):
        raise UsageError(f"--with-registry-auth: {path}: `auths` is not an object")
    entries = [v for k, v in auths.items() if _matches(k, registry)]
    if not entries:
        return None
    return _credential(entries[0], registry, path)


def _credential(entry: object, registry: str, path: Path) -> RegistryCredential | None:
    where = f"--with-registry-auth: {path}, auths entry of {registry}"
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: not an object")
    username, password = entry.get("username") or "", entry.get("password") or ""
    if entry.get("auth"):
        try:
            pair = base64.b64decode(str(entry["auth"]), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise UsageError(f"{where}: `auth` is not base64 of user:password") from None
        username, sep, password = pair.partition(":")
        if not sep:
            raise UsageError(f"{where}: `auth` is not base64 of user:password")
    if not (username and password):
        if entry.get("identitytoken"):
            raise UsageError(f"{where}: identity tokens (OAuth) are not supported")
        return None  # an empty entry (what a credential store leaves): no credential
    return RegistryCredential(registry, str(username), str(password))
