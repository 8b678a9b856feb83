"""Golden tests: swarmlet's loader against docker's own output for every corpus stack file.

For each file docker accepts, the loaded document equals docker's ``stack config`` output
(parsed, and also byte for byte as rendered YAML), and the warnings equal what docker printed
while loading plus what ``stack deploy`` prints (results.json). Each file docker rejects
raises a StackError carrying docker's reason, but for the files swarmlet accepts on purpose
(`BEYOND_DOCKER`, each with its reason, which README lists): those load, and the test checks
what docker refused is honoured.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from swarmlet.errors import StackError
from swarmlet.stack.loader import DEPRECATED_PROPERTIES, load_stack
from swarmlet.stack.render import render_config

from .corpus import EXPECTED, RESULTS, expected_config, stage

# Files docker rejects that swarmlet accepts on purpose -> what docker refused.
BEYOND_DOCKER = {
    # compose-spec's long `depends_on` (moby/moby#46827), honoured by `leader.depends_on`.
    "docker__awesome-compose__nginx-golang-postgres_compose.yaml": "services.backend.depends_on",
}
ACCEPTED = sorted(name for name, result in RESULTS.items() if result["rc"] == 0)
REJECTED = sorted(
    name for name, result in RESULTS.items() if result["rc"] != 0 and name not in BEYOND_DOCKER
)


def _expected_warnings(name: str) -> list[str]:
    result = RESULTS[name]
    lines = re.findall(r'level=warning msg="(.*)"', result["stderr"])
    if result["deploy_warn_unsupported"]:
        lines.append(
            "Ignoring unsupported options: " + ", ".join(result["deploy_warn_unsupported"])
        )
    if result["deploy_warn_deprecated"]:
        described = [
            f"{key}: {DEPRECATED_PROPERTIES[key]}" for key in result["deploy_warn_deprecated"]
        ]
        lines.append("Ignoring deprecated options:\n\n" + "\n".join(described))
    return lines


def test_corpus_covers_every_result() -> None:
    assert len(ACCEPTED) == 25
    assert len(REJECTED) + len(BEYOND_DOCKER) == 2


@pytest.mark.parametrize("name", sorted(BEYOND_DOCKER))
def test_a_file_accepted_beyond_docker_loads_with_what_docker_refused(
    name: str, tmp_path: Path
) -> None:
    files, environ = stage(name, tmp_path)
    assert RESULTS[name]["stderr"].startswith(BEYOND_DOCKER[name])  # docker's refusal
    config = load_stack(files, environ).config
    assert config["services"]["backend"]["depends_on"] == {"db": {"condition": "service_healthy"}}


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_file_loads_to_dockers_document(name: str, tmp_path: Path) -> None:
    files, environ = stage(name, tmp_path)
    loaded = load_stack(files, environ)
    assert loaded.config == expected_config(name, tmp_path)


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_file_renders_byte_identical_yaml(name: str, tmp_path: Path) -> None:
    files, environ = stage(name, tmp_path)
    rendered = render_config(load_stack(files, environ).config, "yaml")
    stem = name.rsplit(".", 1)[0]
    expected = (EXPECTED / f"{stem}.config.yml").read_text()
    assert rendered.replace(str(tmp_path), "<WORKDIR>") == expected


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_file_warns_as_docker_does(name: str, tmp_path: Path) -> None:
    files, environ = stage(name, tmp_path)
    assert list(load_stack(files, environ).warnings) == _expected_warnings(name)


@pytest.mark.parametrize("name", REJECTED)
def test_rejected_file_raises_dockers_reason(name: str, tmp_path: Path) -> None:
    files, environ = stage(name, tmp_path)
    with pytest.raises(StackError) as caught:
        load_stack(files, environ)
    # docker prints "<field> <description>", e.g. "services.db Additional property ..."
    docker_field, _, docker_reason = RESULTS[name]["stderr"].partition(" ")
    assert caught.value.path == docker_field
    assert caught.value.message.startswith(docker_reason)
    assert caught.value.file == str(files[0])


def test_override_file_alone_lacks_images_but_merged_pair_has_them(tmp_path: Path) -> None:
    name = "BretFisher__udemy-docker-mastery__swarm-stack-3_docker-compose.prod.yml"
    files, environ = stage(name, tmp_path)
    alone = load_stack(files[1:], environ).config
    merged = load_stack(files, environ).config
    assert "image" not in alone["services"]["drupal"]
    assert merged["services"]["drupal"]["image"] == "custom-drupal:latest"
    assert merged["services"]["postgres"]["secrets"] == [{"source": "psql-pw"}]
