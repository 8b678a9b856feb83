"""Pinning images: a tag resolved to its manifest digest once, on the manager, through the
registry's v2 API, so that every node runs the same image for a service (as swarm's manager
does with `--resolve-image always`).

Owns: parsing image references (docker's rules: a first path component with a '.' or ':', or
`localhost`, is a registry host; anything else is on Docker Hub, `library/` for single names);
asking a registry for a tag's digest (HEAD /v2/NAME/manifests/TAG with the manifest-list, OCI
index and v2 manifest media types, GET if HEAD gives no `Docker-Content-Digest`), answering a 401
challenge with a Bearer token (anonymous, or for the given credentials) or Basic credentials;
and `pin_image`, the policy the service and stack operations share.

Invariants:
  - a failure to reach or read the registry never fails the operation: the tag is kept and a
    warning says so, in docker's words ("image could not be accessed on a registry to record
    its digest");
  - a pinned reference is `NAME:TAG@sha256:...` (the tag kept for people to read; Docker itself
    uses only the digest), or the user's own `NAME@sha256:...`, left as it is;
  - each request is bounded by `REQUEST_TIMEOUT_S` and one resolution by `RESOLVE_TIMEOUT_S`.

It must not know services or the cluster. The HTTP calls are urllib's, blocking, in a worker
thread (`trio.to_thread`), which a cancelled caller abandons.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message

import trio

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
# What a `service create` may wait for a registry: a cluster without one must not feel it.
REQUEST_TIMEOUT_S = 3.0
RESOLVE_TIMEOUT_S = 8.0
MANIFEST_MEDIA_TYPES = (
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_MAX_MANIFEST_BYTES = 4 << 20
_MAX_TOKEN_BYTES = 64 << 10


class RegistryError(Exception):
    """The registry could not be reached, refused, or answered something unusable."""


@dataclass(frozen=True)
class ImageReference:
    """An image reference split as docker splits it. `name` is as written (without tag and
    digest), `registry` the host (`docker.io` for Docker Hub), `repository` the path on it."""

    name: str
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def explicit_registry(self) -> bool:
        """Whether the name starts with a registry host (`localhost:5000/web`, `ghcr.io/x`)."""
        return self.name.split("/", 1)[0] == self.registry and "/" in self.name

    def pinned(self, digest: str) -> str:
        return f"{self.name}:{self.tag or 'latest'}@{digest}"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def _is_registry_host(component: str) -> bool:
    # docker/distribution reference.splitDockerDomain.
    return "." in component or ":" in component or component == "localhost"


def parse_reference(image: str) -> ImageReference:
    """Split `image`; raises ValueError if it is not an image reference."""
    rest, _, digest = image.partition("@")
    if digest and not _DIGEST.match(digest):
        raise ValueError(f"invalid digest in image reference {image!r}")
    name, tag = rest, None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = rest.rpartition(":")
        if not _TAG.match(tag):
            raise ValueError(f"invalid tag in image reference {image!r}")
    if not name or name != name.strip() or any(c.isspace() for c in name):
        raise ValueError(f"invalid image reference {image!r}")
    first, slash, path = name.partition("/")
    if slash and _is_registry_host(first):
        registry, repository = first, path
    else:
        registry, repository = DOCKER_HUB, name if slash else f"library/{name}"
    if not repository or repository != repository.lower():
        raise ValueError(f"invalid repository name in image reference {image!r}")
    return ImageReference(name, registry, repository, tag, digest or None)


# ------------------------------------------------------------------------------------ HTTP


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Message
    body: bytes


def _request(url: str, method: str, headers: dict[str, str], limit: int) -> _Answer:
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return _Answer(response.status, response.headers, response.read(limit))
    except urllib.error.HTTPError as exc:
        with exc:
            return _Answer(exc.code, exc.headers, exc.read(limit) if method != "HEAD" else b"")


def _is_loopback(host: str) -> bool:
    hostname = urllib.parse.urlsplit(f"//{host}").hostname or ""
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="..."` as ("bearer", {realm, service, ...})."""
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', params))


def _basic(credentials: Credentials) -> str:
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _token(challenge: dict[str, str], repository: str, credentials: Credentials | None) -> str:
    """A Bearer token for pulling `repository` (docker's token protocol)."""
    realm = challenge.get("realm", "")
    if not realm.startswith(("https://", "http://")):
        raise RegistryError(f"the registry's token realm is not a URL: {realm!r}")
    query = {"scope": f"repository:{repository}:pull"}
    if challenge.get("service"):
        query["service"] = challenge["service"]
    headers = {"Authorization": _basic(credentials)} if credentials else {}
    answer = _request(f"{realm}?{urllib.parse.urlencode(query)}", "GET", headers, _MAX_TOKEN_BYTES)
    if answer.status != 200:
        raise RegistryError(f"the token service answered HTTP {answer.status}")
    try:
        document = json.loads(answer.body)
        token = document.get("token") or document.get("access_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise RegistryError("the token service answered no token")
    return token


def _manifest_digest(ref: ImageReference, credentials: Credentials | None) -> str:
    """Blocking: the digest of `ref`'s tag (HTTPS; plain HTTP too for a loopback registry,
    which docker allows without configuration)."""
    host = DOCKER_HUB_API if ref.registry == DOCKER_HUB else ref.registry
    schemes = ("https", "http") if _is_loopback(host) else ("https",)
    path = f"/v2/{ref.repository}/manifests/{ref.tag or 'latest'}"
    last_error: Exception | None = None
    for scheme in schemes:
        try:
            return _digest_at(f"{scheme}://{host}{path}", ref, credentials)
        except (urllib.error.URLError, ssl.SSLError, ConnectionError) as exc:
            last_error = exc  # a plain-HTTP registry fails the TLS handshake: try the next
        except (TimeoutError, OSError) as exc:
            raise RegistryError(f"{host}: {exc}") from None
    reason = getattr(last_error, "reason", last_error)
    raise RegistryError(f"{host}: {reason}")


def _digest_at(url: str, ref: ImageReference, credentials: Credentials | None) -> str:
    headers = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
    answer = _request(url, "HEAD", headers, 0)
    if answer.status == 401:
        scheme, challenge = _challenge(answer.headers.get("WWW-Authenticate", ""))
        if scheme == "bearer":
            headers["Authorization"] = "Bearer " + _token(challenge, ref.repository, credentials)
        elif scheme == "basic" and credentials is not None:
            headers["Authorization"] = _basic(credentials)
        else:
            raise RegistryError("the registry asks for credentials (none were given)")
        answer = _request(url, "HEAD", headers, 0)
    if answer.status == 401:
        raise RegistryError("the registry refused the credentials")
    if answer.status == 404:
        raise RegistryError(f"no such tag on the registry: {ref.repository}:{ref.tag or 'latest'}")
    if answer.status != 200:
        raise RegistryError(f"the registry answered HTTP {answer.status}")
    digest = answer.headers.get("Docker-Content-Digest", "")
    if _DIGEST.match(digest):
        return digest
    # Not every registry sends the header on HEAD: the digest is the manifest's own hash.
    answer = _request(url, "GET", headers, _MAX_MANIFEST_BYTES)
    if answer.status != 200:
        raise RegistryError(f"the registry answered HTTP {answer.status}")
    return "sha256:" + hashlib.sha256(answer.body).hexdigest()


async def resolve_digest(ref: ImageReference, credentials: Credentials | None = None) -> str:
    """The digest `ref`'s tag names on its registry now; raises RegistryError."""
    with trio.move_on_after(RESOLVE_TIMEOUT_S):
        return await trio.to_thread.run_sync(
            _manifest_digest, ref, credentials, abandon_on_cancel=True
        )
    raise RegistryError(f"{ref.registry}: no answer within {RESOLVE_TIMEOUT_S:.0f} s")


# ---------------------------------------------------------------------------------- policy


async def pin_image(
    image: str, current: str | None = None, credentials: Credentials | None = None
) -> tuple[str, str | None]:
    """The image to commit for a service whose spec asks for `image`, and a warning or None.

    `current` is the image the service runs now, if any. A reference with a digest is the
    user's pin and is kept, except the service's own `current` image with a tag: that is a tag
    pinned here before, carried over by an update that did not change the image. It is resolved
    again (so `update --force` follows a moved tag), and if the registry cannot say, the service
    keeps the digest it runs rather than falling back to a bare tag.
    """
    try:
        ref = parse_reference(image)
    except ValueError:
        return image, None  # validate_spec judges the spec; this is not the place to refuse
    if ref.digest is not None and (ref.tag is None or image != current):
        return image, None
    # Only names that start with a registry host are resolved. A Docker Hub-style name
    # (`swarmlet/web:1`, `busybox`) is very often an image built on the node and never pushed,
    # and Docker Hub is unreachable from many clusters: asking it would cost every create a
    # network timeout and a warning. Those keep their tag, as with --no-resolve-image.
    if not ref.explicit_registry:
        return image, None
    unpinned = f"{ref.name}:{ref.tag}" if ref.tag else ref.name
    try:
        digest = await resolve_digest(ref, credentials)
    except RegistryError as exc:
        kept = unpinned if ref.digest is None else image
        current_ref = _parsed_or_none(current) if current is not None else None
        if (
            current_ref is not None
            and current is not None
            and current_ref.digest
            and (current_ref.name, current_ref.tag or "latest") == (ref.name, ref.tag or "latest")
        ):
            kept = current  # the same tag, already pinned: keep running that digest
        # docker's words, so that people and scripts recognise them.
        return kept, (
            f"image {unpinned} could not be accessed on a registry to record its digest "
            f"({exc}); "
            + (
                f"each node will access {kept} independently, possibly running different "
                "versions of the image"
                if kept == unpinned
                else f"the service keeps {kept}"
            )
        )
    return ref.pinned(digest), None


def _parsed_or_none(image: str) -> ImageReference | None:
    try:
        return parse_reference(image)
    except ValueError:
        return None
