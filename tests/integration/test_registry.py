"""Images pinned to digests, against a real registry on loopback (Debian's `docker-registry`,
distribution 2.8, with its own config file and storage): the manager resolves a tag once, every
node runs that digest, and an update after the tag moved runs the new digest everywhere, even on
nodes whose local copy of the tag still names the old image."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from swarmlet.api.registry import Credentials, parse_reference, pin_image
from swarmlet.executor.docker_runtime import open_docker_runtime
from tests.integration.cluster import LocalCluster, run_cli, services, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def _untag(*refs: str) -> None:
    """Remove these names from the local engine (the images stay, under their other names)."""
    subprocess.run(["docker", "rmi", *refs], capture_output=True, check=False)


def _image_id(ref: str) -> str:
    return _docker("image", "inspect", "--format", "{{.Id}}", ref).strip()


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    docker_config: Path | None = None  # a DOCKER_CONFIG dir logged in to it, if it asks

    def push(self, local: str, name: str) -> str:
        """Tag `local` as HOST/name, push it, and return the manifest digest it got."""
        ref = f"{self.host}/{name}"
        _docker("tag", local, ref)
        config = ("--config", str(self.docker_config)) if self.docker_config else ()
        _docker(*config, "push", ref)
        digests = json.loads(_docker("image", "inspect", "--format", "{{json .RepoDigests}}", ref))
        repository = ref.rsplit(":", 1)[0]
        (digest,) = [d.split("@", 1)[1] for d in digests if d.startswith(repository + "@")]
        assert digest.startswith("sha256:")
        return str(digest)


USER, PASSWORD = "puller", "s3cret-pw"


def _bcrypt(password: str) -> str:
    # The registry's htpasswd takes bcrypt only; glibc's crypt(3) makes it, and Python's
    # `crypt` (deprecated, still in 3.11) reaches it without another package.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))


@contextmanager
def _serve_registry(root: Path, *, basic_auth: bool) -> Iterator[Registry]:
    """Debian's docker-registry on 127.0.0.1:<free port>, with its own config and storage."""
    binary = shutil.which("docker-registry")
    assert binary is not None, "Debian's docker-registry is not installed (bash .ci/setup.sh)"
    root.mkdir()
    port = _free_port()
    config = root / "registry.yml"
    auth = ""
    if basic_auth:
        (root / "htpasswd").write_text(f"{USER}:{_bcrypt(PASSWORD)}\n")
        auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {root / 'htpasswd'}\n"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + auth
    )
    log = (root / "registry.log").open("wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    try:

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as r:
                    return bool(r.status == 200)
            except urllib.error.HTTPError as exc:
                return exc.code == 401 and basic_auth
            except OSError:
                return False

        wait_for("the registry to answer", answers, timeout=20)
        registry = Registry(f"127.0.0.1:{port}")
        if basic_auth:
            registry.docker_config = root / "docker-config"
            login = ["login", "-u", USER, "--password-stdin", registry.host]
            subprocess.run(
                ["docker", "--config", str(registry.docker_config), *login],
                input=PASSWORD,
                capture_output=True,
                text=True,
                check=True,
            )
        yield registry
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
        _untag_all(f"127.0.0.1:{port}/")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with _serve_registry(tmp_path / "registry", basic_auth=False) as served:
        yield served


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[Registry]:
    with _serve_registry(tmp_path / "auth-registry", basic_auth=True) as served:
        yield served


def _untag_all(prefix: str) -> None:
    """Every local name under `prefix` (tags and digests), so no test leaves names behind."""
    listing = _docker(
        "image", "ls", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}"
    )
    names = []
    for line in listing.splitlines():
        repository, tag, digest = line.split(" ")
        if repository.startswith(prefix):
            names += [f"{repository}:{tag}"] if tag != "<none>" else []
            names += [f"{repository}@{digest}"] if digest != "<none>" else []
    if names:
        _untag(*names)


# ------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("image", "registry_host", "repository", "tag", "digest", "explicit"),
    [
        ("busybox", "docker.io", "library/busybox", None, None, False),
        ("swarmlet/web:1", "docker.io", "swarmlet/web", "1", None, False),
        ("localhost:5000/web:v", "localhost:5000", "web", "v", None, True),
        ("localhost/web", "localhost", "web", None, None, True),
        ("ghcr.io/a/b:1.2@sha256:" + "a" * 64, "ghcr.io", "a/b", "1.2", "sha256:" + "a" * 64, True),
        (
            "127.0.0.1:5000/web@sha256:" + "b" * 64,
            "127.0.0.1:5000",
            "web",
            None,
            "sha256:" + "b" * 64,
            True,
        ),
    ],
)
def test_references_split_as_docker_splits_them(
    image: str,
    registry_host: str,
    repository: str,
    tag: str | None,
    digest: str | None,
    explicit: bool,
) -> None:
    ref = parse_reference(image)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry_host,
        repository,
        tag,
        digest,
    )
    assert ref.explicit_registry is explicit


@pytest.mark.parametrize("image", ["Web:1", "web:bad tag", "web@sha256:short", ""])
def test_invalid_references_are_refused(image: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        parse_reference(image)


# ----------------------------------------------------------------------- the client alone


def test_a_tag_resolves_to_the_digest_the_registry_names_now(registry: Registry) -> None:
    first = registry.push("swarmlet/web:1", "web:v")
    assert trio.run(pin_image, f"{registry.host}/web:v") == (f"{registry.host}/web:v@{first}", None)
    moved = registry.push("swarmlet/web:2", "web:v")
    assert moved != first
    assert trio.run(pin_image, f"{registry.host}/web:v") == (f"{registry.host}/web:v@{moved}", None)
    # the service's own pinned image is resolved again; a user's pin is kept as it is
    current = f"{registry.host}/web:v@{first}"
    assert trio.run(pin_image, current, current) == (f"{registry.host}/web:v@{moved}", None)
    assert trio.run(pin_image, current, None) == (current, None)


def test_basic_auth_uses_the_credentials_given_and_warns_without_them(
    auth_registry: Registry,
) -> None:
    digest = auth_registry.push("swarmlet/web:1", "private:v")
    image = f"{auth_registry.host}/private:v"
    given = Credentials(USER, PASSWORD)
    assert trio.run(pin_image, image, None, given) == (f"{image}@{digest}", None)
    kept, warning = trio.run(pin_image, image)
    assert kept == image
    assert warning is not None and "asks for credentials" in warning
    kept, warning = trio.run(pin_image, image, None, Credentials(USER, "wrong"))
    assert kept == image
    assert warning is not None and "refused the credentials" in warning


def test_an_unreachable_registry_keeps_the_tag_with_docker_s_warning() -> None:
    image = f"127.0.0.1:{_free_port()}/web:v"
    kept, warning = trio.run(pin_image, image)
    assert kept == image
    assert warning is not None
    assert "could not be accessed on a registry to record its digest" in warning
    # a service already pinned to that tag keeps its digest rather than the bare tag
    current = f"{image}@sha256:" + "c" * 64
    kept, warning = trio.run(pin_image, image, current)
    assert (kept, warning is not None) == (current, True)


def test_names_without_a_registry_host_are_not_resolved() -> None:
    assert trio.run(pin_image, "swarmlet/web:1") == ("swarmlet/web:1", None)


def test_a_pinned_image_is_pulled_when_its_digest_is_absent_whatever_the_tag_names(
    registry: Registry,
) -> None:
    digest = registry.push("swarmlet/web:1", "pull:v")
    ref = f"{registry.host}/pull:v"
    # Locally the tag names another image, and the digest is nowhere.
    _untag(f"{registry.host}/pull@{digest}")
    _docker("tag", "swarmlet/web:2", ref)

    async def ensure() -> None:
        async with open_docker_runtime() as runtime:
            await runtime.ensure_image(f"{ref}@{digest}")

    trio.run(ensure)
    digests = _docker("image", "inspect", "--format", "{{json .RepoDigests}}", "swarmlet/web:1")
    assert f"{registry.host}/pull@{digest}" in json.loads(digests)
    assert _image_id(f"{registry.host}/pull@{digest}") == _image_id("swarmlet/web:1")


# ------------------------------------------------------------------------------ a cluster


def _running_images(cluster: LocalCluster, service: str) -> list[tuple[str, str]]:
    """(the reference each running container was created from, its image ID)."""
    found = []
    for container in cluster.containers(service=service):
        if container["state"] != "running":
            continue
        attrs = json.loads(_docker("inspect", container["id"]))[0]
        found.append((attrs["Config"]["Image"], attrs["Image"]))
    return found


def test_every_node_runs_the_digest_and_follows_the_tag_when_it_moves(
    cluster: LocalCluster, registry: Registry
) -> None:
    d = cluster.agents[0].data_dir
    ref = f"{registry.host}/web:v"
    first = registry.push("swarmlet/web:1", "web:v")
    # No local copy of the tag or the digest: the nodes must pull by digest.
    _untag(ref, f"{registry.host}/web@{first}")
    created = run_cli(
        "service", "create", "--name", "web", "--replicas", "3", ref, data_dir=d, timeout=120
    )
    assert "warning" not in created.stderr
    assert services(cluster)["web"]["image"] == f"{ref}@{first}"
    expected = [(f"{ref}@{first}", _image_id("swarmlet/web:1"))] * 3

    def all_first() -> bool:
        return _running_images(cluster, "web") == expected

    wait_for("three replicas of the first digest", all_first, timeout=60)
    nodes = {c["node"] for c in cluster.containers(service="web") if c["state"] == "running"}
    assert len(nodes) == 3

    moved = registry.push("swarmlet/web:2", "web:v")
    # The tag moved on the registry; here it is put back on the old image, so a node that
    # trusted its local tag would run v1.
    _docker("tag", "swarmlet/web:1", ref)
    _untag(f"{registry.host}/web@{moved}")
    updated = run_cli("service", "update", "--force", "web", data_dir=d, timeout=180)
    assert "warning" not in updated.stderr
    assert services(cluster)["web"]["image"] == f"{ref}@{moved}"
    expected = [(f"{ref}@{moved}", _image_id("swarmlet/web:2"))] * 3

    def all_moved() -> bool:
        return _running_images(cluster, "web") == expected

    wait_for("three replicas of the moved digest", all_moved, timeout=60)


def test_no_resolve_image_and_an_unreachable_registry_keep_the_tag(
    cluster: LocalCluster, registry: Registry
) -> None:
    d = cluster.agents[0].data_dir
    ref = f"{registry.host}/kept:v"
    registry.push("swarmlet/web:1", "kept:v")
    unreachable = f"127.0.0.1:{_free_port()}/gone:v"
    _docker("tag", "swarmlet/web:1", unreachable)  # present locally, on no registry
    try:
        run_cli("service", "create", "-d", "--no-resolve-image", "--name", "kept", ref, data_dir=d)
        assert services(cluster)["kept"]["image"] == ref
        created = run_cli("service", "create", "--name", "gone", unreachable, data_dir=d)
        assert "could not be accessed on a registry to record its digest" in created.stderr
        assert services(cluster)["gone"]["image"] == unreachable
        wait_for(
            "the unpinned service to run",
            lambda: (
                _running_images(cluster, "gone") == [(unreachable, _image_id("swarmlet/web:1"))]
            ),
            timeout=60,
        )
    finally:
        _untag(unreachable)


def test_a_stack_redeploy_is_unchanged_until_its_tag_moves(
    cluster: LocalCluster, registry: Registry, tmp_path: Path
) -> None:
    d = cluster.agents[0].data_dir
    ref = f"{registry.host}/stk:v"
    first = registry.push("swarmlet/web:1", "stk:v")
    compose = tmp_path / "stack.yml"
    compose.write_text(f"services:\n  app:\n    image: {ref}\n    deploy:\n      replicas: 2\n")

    def deploy() -> str:
        return run_cli("stack", "deploy", "-c", str(compose), "st", data_dir=d, timeout=120).stdout

    assert "Creating service st_app" in deploy()
    assert services(cluster)["st_app"]["image"] == f"{ref}@{first}"
    again = deploy()
    assert "Updating" not in again and "Creating" not in again
    moved = registry.push("swarmlet/web:2", "stk:v")
    assert "Updating service st_app" in deploy()
    assert services(cluster)["st_app"]["image"] == f"{ref}@{moved}"
    expected = [(f"{ref}@{moved}", _image_id("swarmlet/web:2"))] * 2
    wait_for(
        "two replicas of the moved digest",
        lambda: _running_images(cluster, "st_app") == expected,
        timeout=60,
    )
