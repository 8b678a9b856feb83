"""Multi-file merging as docker/cli's merge.go does it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from swarmlet.stack.loader import load_stack


def _merge(tmp_path: Path, base: str, override: str) -> dict[str, Any]:
    (tmp_path / "a.yml").write_text(base)
    (tmp_path / "b.yml").write_text(override)
    return load_stack([tmp_path / "a.yml", tmp_path / "b.yml"], {}).config


def test_scalars_override_and_new_services_are_added(tmp_path: Path) -> None:
    config = _merge(
        tmp_path,
        "services:\n  web:\n    image: a\n    user: u\n",
        "services:\n  web:\n    image: b\n  db:\n    image: pg\n",
    )
    assert config["services"] == {"db": {"image": "pg"}, "web": {"image": "b", "user": "u"}}


def test_ports_volumes_secrets_merge_by_key_and_sort(tmp_path: Path) -> None:
    config = _merge(
        tmp_path,
        "services:\n  web:\n    image: a\n    ports: ['8080:80']\n    volumes: ['v1:/b']\n"
        "    secrets: [s2]\n",
        "services:\n  web:\n    ports: ['8080:80', '443:443']\n    volumes: ['v2:/b', 'v3:/a']\n"
        "    secrets: [s1]\n",
    )
    web = config["services"]["web"]
    assert [p["published"] for p in web["ports"]] == [443, 8080]
    assert web["volumes"] == [
        {"type": "volume", "source": "v3", "target": "/a"},
        {"type": "volume", "source": "v2", "target": "/b"},
    ]
    assert web["secrets"] == [{"source": "s1"}, {"source": "s2"}]


def test_command_is_replaced_but_other_lists_are_appended(tmp_path: Path) -> None:
    config = _merge(
        tmp_path,
        "services:\n  web:\n    image: a\n    command: run a\n    dns: [1.1.1.1]\n",
        "services:\n  web:\n    command: run b\n    dns: [8.8.8.8]\n",
    )
    web = config["services"]["web"]
    assert web["command"] == ["run", "b"]
    assert web["dns"] == ["1.1.1.1", "8.8.8.8"]


def test_maps_merge_key_by_key(tmp_path: Path) -> None:
    config = _merge(
        tmp_path,
        "services:\n  web:\n    image: a\n    environment: {A: '1', B: '1'}\n"
        "    deploy:\n      replicas: 2\n      labels: {x: '1'}\n",
        "services:\n  web:\n    environment: {B: '2'}\n    deploy:\n      replicas: 0\n",
    )
    web = config["services"]["web"]
    assert web["environment"] == {"A": "1", "B": "2"}
    assert web["deploy"] == {"replicas": 0, "labels": {"x": "1"}}


def test_logging_options_merge_when_driver_matches(tmp_path: Path) -> None:
    config = _merge(
        tmp_path,
        "services:\n  web:\n    image: a\n    logging:\n      driver: json-file\n"
        "      options: {max-size: 1m}\n",
        "services:\n  web:\n    logging:\n      options: {max-file: '3'}\n",
    )
    assert config["services"]["web"]["logging"] == {
        "driver": "json-file",
        "options": {"max-file": "3", "max-size": "1m"},
    }


def test_top_level_resources_are_replaced_per_name(tmp_path: Path) -> None:
    config = _merge(
        tmp_path,
        "services: {}\nvolumes:\n  v:\n    driver: a\n  w: {}\n",
        "services: {}\nvolumes:\n  v:\n    labels: {k: v}\n",
    )
    assert config["volumes"] == {"v": {"labels": {"k": "v"}}, "w": {}}


def test_same_published_port_keeps_the_override_like_docker_28(tmp_path: Path) -> None:
    # docker/cli merge_test.go "override_same_published"
    config = _merge(
        tmp_path,
        "services:\n  web:\n    image: a\n    ports: ['8080:80']\n",
        "services:\n  web:\n    ports: ['8080:81']\n",
    )
    assert config["services"]["web"]["ports"] == [
        {"mode": "ingress", "target": 81, "published": 8080, "protocol": "tcp"}
    ]


def test_tcp_and_udp_on_one_published_port_collapse_like_docker_28(tmp_path: Path) -> None:
    # docker/cli#6223: the merge keys ports by published port even when the override has none
    config = _merge(
        tmp_path,
        "services:\n  web:\n    image: a\n    ports: ['443:443', '443:443/udp', '80:80']\n",
        "services:\n  web:\n    environment: {FOO: bar}\n",
    )
    ports = config["services"]["web"]["ports"]
    assert [(p["published"], p["protocol"]) for p in ports] == [(80, "tcp"), (443, "udp")]


def test_secrets_merge_by_source_like_docker(tmp_path: Path) -> None:
    # docker/cli merge_test.go TestLoadMultipleSecretsConfig "override_same_source"
    config = _merge(
        tmp_path,
        "services:\n  web:\n    image: a\n    secrets:\n      - foo_secret\n"
        "      - {source: bar_secret, target: waw_secret}\n",
        "services:\n  web:\n    secrets:\n      - {source: bar_secret, target: bof_secret}\n"
        "      - {source: baz_secret, target: waw_secret}\n",
    )
    assert config["services"]["web"]["secrets"] == [
        {"source": "bar_secret", "target": "bof_secret"},
        {"source": "baz_secret", "target": "waw_secret"},
        {"source": "foo_secret"},
    ]


def test_ulimits_are_replaced_whole_per_name(tmp_path: Path) -> None:
    # docker/cli merge_test.go TestLoadMultipleUlimits "override_different_notation"
    config = _merge(
        tmp_path,
        "services:\n  web:\n    image: a\n    ulimits:\n      nofile: {soft: 11111, hard: 99999}\n"
        "      noproc: 44444\n",
        "services:\n  web:\n    ulimits:\n      nofile: 55555\n"
        "      noproc: {soft: 22222, hard: 33333}\n",
    )
    assert config["services"]["web"]["ulimits"] == {
        "nofile": 55555,
        "noproc": {"soft": 22222, "hard": 33333},
    }


def test_logging_driver_change_drops_base_options(tmp_path: Path) -> None:
    # docker/cli merge_test.go TestLoadLogging "no_override_options"
    config = _merge(
        tmp_path,
        "services:\n  web:\n    image: a\n    logging:\n      driver: json-file\n"
        "      options: {frequency: '2000'}\n",
        "services:\n  web:\n    logging:\n      driver: syslog\n",
    )
    assert config["services"]["web"]["logging"] == {"driver": "syslog"}


def test_service_networks_merge_aliases_like_docker(tmp_path: Path) -> None:
    # docker/cli merge_test.go TestLoadMultipleServiceNetworks "override_with_aliases"
    config = _merge(
        tmp_path,
        "services:\n  web:\n    image: a\n    networks:\n      net1: {aliases: [alias1]}\n"
        "      net2:\n",
        "services:\n  web:\n    networks:\n      net1: {aliases: [alias2, alias3]}\n"
        "      net3: {}\n",
    )
    assert config["services"]["web"]["networks"] == {
        "net1": {"aliases": ["alias2", "alias3"]},
        "net2": None,
        "net3": {},
    }


def test_build_cap_add_and_labels_merge_like_docker(tmp_path: Path) -> None:
    # docker/cli merge_test.go TestLoadMultipleConfigs
    config = _merge(
        tmp_path,
        "services:\n  foo:\n    image: foo\n    build: {context: ., dockerfile: bar.Dockerfile}\n"
        "    labels: [foo=bar]\n    cap_add: [NET_ADMIN]\n",
        "services:\n  foo:\n    image: baz\n    build:\n      dockerfile: foo.Dockerfile\n"
        "      args: [buildno=1, password=secret]\n    labels: {foo: baz}\n"
        "    cap_add: [SYS_ADMIN]\n"
        "  bar:\n    image: bar\n",
    )
    assert config["services"]["foo"] == {
        "build": {
            "context": ".",
            "dockerfile": "foo.Dockerfile",
            "args": {"buildno": "1", "password": "secret"},
        },
        "cap_add": ["NET_ADMIN", "SYS_ADMIN"],
        "image": "baz",
        "labels": {"foo": "baz"},
    }
    assert list(config["services"]) == ["bar", "foo"]
