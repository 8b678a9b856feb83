"""`--with-registry-auth` on the manager: the credential a request carries, the one a service
holds, and which of them pins the image and is stored.

docker's rules: `service create|update --with-registry-auth` and `stack deploy
--with-registry-auth` send the client's credential for each image's registry, which replaces
the service's; without the flag an update keeps the stored one. The CLI reads it
(`cli.registry_auth`) and sends it in the request's `registry_auth` argument
({"registry", "username", "password"}; for a stack, one per service, None where the client has
none, which clears the service's as docker's empty credential does).

Invariants: a credential is used only with its own registry (to resolve the digest here, to
pull on the nodes: `executor.registry_auth`); it is stored only sealed
(`security.registry_auth`), never returned by any operation, never logged.
"""

from __future__ import annotations

from swarmlet.api.cluster import ClusterAccess
from swarmlet.api.registry import Credentials
from swarmlet.errors import SecretsUnavailableError, UsageError
from swarmlet.executor.registry_auth import RegistryCredential, registry_of
from swarmlet.security.registry_auth import open_credential, seal_credential
from swarmlet.state.commands import SetRegistryAuth
from swarmlet.state.model import Service


def requested(value: object) -> RegistryCredential | None:
    """The credential a request's `registry_auth` argument carries (None: none)."""
    if value is None:
        return None
    try:
        return RegistryCredential.from_mapping(value)
    except ValueError as exc:
        raise UsageError(f"registry_auth: {exc}") from None


def check_for_image(credential: RegistryCredential | None, image: str) -> None:
    """A UsageError if `credential` is for another registry than `image`'s."""
    if credential is not None and credential.registry != registry_of(image):
        raise UsageError(
            f"--with-registry-auth: the credential given is for {credential.registry}, and the "
            f"image {image} is on {registry_of(image)}"
        )


def stored(cluster: ClusterAccess, service: Service) -> RegistryCredential | None:
    """The service's own credential, opened with the managers' key (None if it has none)."""
    if not service.registry_auth:
        return None
    keys = cluster.keyring.require_managers()
    try:
        return open_credential(keys, service.id, service.registry_auth)
    except SecretsUnavailableError as exc:
        raise UsageError(str(exc)) from None


def for_pinning(credential: RegistryCredential | None, image: str) -> Credentials | None:
    """What `registry.pin_image` may send to `image`'s registry: the credential if it is that
    registry's."""
    if credential is None or credential.registry != registry_of(image):
        return None
    return Credentials(credential.username, credential.password)


def sealed(cluster: ClusterAccess, service_id: str, credential: RegistryCredential | None) -> bytes:
    """`Service.registry_auth` for `credential` (b"" for none)."""
    if credential is None:
        return b""
    return seal_credential(cluster.keyring.require_managers(), service_id, credential)


def set_command(
    cluster: ClusterAccess, service: Service, credential: RegistryCredential | None
) -> SetRegistryAuth | None:
    """The command that gives `service` `credential` in place of its own; None if it holds
    that one already (so an unchanged stack redeploy stays a no-op)."""
    try:
        unchanged = stored(cluster, service) == credential
    except UsageError:  # a damaged one is replaced
        unchanged = False
    if unchanged:
        return None
    return SetRegistryAuth(service.id, sealed(cluster, service.id, credential))
