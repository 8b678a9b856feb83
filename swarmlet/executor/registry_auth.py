"""A registry credential (`--with-registry-auth`) as the executor receives and uses it.

The CLI reads the client's credential for an image's registry (`cli.registry_auth`), the
managers seal it into the service (`security.registry_auth`), and the node that runs a task
receives it with the task's secrets (`security.secret_delivery`), under `REGISTRY_AUTH_NAME`,
a name reserved for it (a secret of that name is never delivered). The executor hands it
to Docker's pull (`auth_config`) and to nothing else: it is never written to disk, logged or
put in a container.

Invariant: a credential is used only for the registry it was given for. A service updated to an
image on another registry keeps its credential (as docker's does) but pulls that image without
it, so a password is never sent to a registry other than its own.

Pure: values and docker's reference rule; no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from swarmlet.errors import SecretsUnavailableError

# The key of the credential among a task's delivered values (`secret_delivery.TaskFiles`).
REGISTRY_AUTH_NAME = "\x00registry-auth"
REGISTRY_AUTH_FILE = (REGISTRY_AUTH_NAME, False)
DOCKER_HUB = "docker.io"


@dataclass(frozen=True, slots=True)
class RegistryCredential:
    registry: str  # as image references name it: `host[:port]`, `docker.io` for Docker Hub
    username: str
    password: str

    def __repr__(self) -> str:  # tracebacks and logs must not show the password
        return f"RegistryCredential({self.registry!r}, {self.username!r}, password=***)"

    __str__ = __repr__

    def to_bytes(self) -> bytes:
        fields = {"registry": self.registry, "username": self.username, "password": self.password}
        return json.dumps(fields).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> RegistryCredential:
        """ValueError if `data` is not one."""
        try:
            fields = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise ValueError("a registry credential is not JSON") from None
        return cls.from_mapping(fields)

    @classmethod
    def from_mapping(cls, fields: object) -> RegistryCredential:
        """From {"registry", "username", "password"} (the control API's form); ValueError."""
        if not isinstance(fields, Mapping):
            raise ValueError("a registry credential must be a mapping")
        values = [fields.get(key) for key in ("registry", "username", "password")]
        if not all(isinstance(v, str) and v for v in values):
            raise ValueError("a registry credential needs a registry, a username and a password")
        registry, username, password = (str(v) for v in values)
        return cls(registry, username, password)

    def as_mapping(self) -> dict[str, str]:
        return {"registry": self.registry, "username": self.username, "password": self.password}

    def auth_config(self) -> dict[str, str]:
        """What Docker's pull takes (docker-py's `auth_config`, the `X-Registry-Auth` header)."""
        return {"username": self.username, "password": self.password}


def registry_of(image: str) -> str:
    """The registry host of an image reference, by docker's rule (distribution's
    splitDockerDomain): a first path component with a '.' or ':', or `localhost`, is a host;
    anything else is on Docker Hub."""
    name = image.partition("@")[0]
    first, slash, _ = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def credential_for(
    files: Mapping[tuple[str, bool], bytes], image: str
) -> RegistryCredential | None:
    """The delivered credential to pull `image` with, if one came and it is for that image's
    registry. SecretsUnavailableError if what came is not a credential."""
    data = files.get(REGISTRY_AUTH_FILE)
    if data is None:
        return None
    try:
        credential = RegistryCredential.from_bytes(data)
    except ValueError as exc:
        raise SecretsUnavailableError(
            f"the service's registry credential is damaged: {exc}"
        ) from None
    return credential if credential.registry == registry_of(image) else None
