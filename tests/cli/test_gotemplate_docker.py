"""The template engine against docker's own rendering of the same data.

`data/docker_templates.json` holds what docker CLI 28 printed for `docker inspect --format` and
`docker volume ls --format` over a container, a volume and a network it made, beside their
`docker inspect` JSON (recorded by `data/record_docker_templates.py`). The engine, given that
JSON, prints what docker printed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from swarmlet.cli.docker_format import render
from swarmlet.cli.gotemplate import Record, parse

RECORDED = json.loads((Path(__file__).parent / "data" / "docker_templates.json").read_text())


def test_the_recording_is_docker_28s() -> None:
    assert RECORDED["docker_version"].startswith("28.")


@pytest.mark.parametrize(
    "case", RECORDED["inspect"], ids=[f"{c['kind']}:{c['template']}" for c in RECORDED["inspect"]]
)
def test_inspect_templates_render_as_docker_renders_them(case: dict[str, Any]) -> None:
    data = RECORDED["objects"][case["kind"]]
    # docker inspect prints each object's rendering and a newline.
    assert parse(case["template"]).execute(data) + "\n" == case["docker"]


def volume_row(volume: dict[str, Any]) -> Record:
    """A row of `docker volume ls` (docker's volumeContext), from the volume's inspect JSON."""
    labels = volume["Labels"] or {}
    return Record(
        "*formatter.volumeContext",
        {
            "Name": volume["Name"],
            "Driver": volume["Driver"],
            "Scope": volume["Scope"],
            "Mountpoint": volume["Mountpoint"],
            "Label": lambda name: labels.get(name, ""),
        },
    )


VOLUME_HEADERS = {
    "Name": "VOLUME NAME",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "Mountpoint": "MOUNTPOINT",
    "Labels": "LABELS",
}


@pytest.mark.parametrize(
    "case", RECORDED["volume_ls"], ids=[c["template"] for c in RECORDED["volume_ls"]]
)
def test_list_formats_render_as_docker_renders_them(case: dict[str, Any]) -> None:
    rows = [volume_row(v) for v in RECORDED["volumes"]]
    assert render(case["template"], VOLUME_HEADERS, rows) == case["docker"]
