"""Helpers that stage a corpus stack file in a scratch dir the way the expected outputs were
made (see /work/shared/corpus/expected/README.md) and load docker's expected document."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

CORPUS = Path("/work/shared/corpus")
STACKS = CORPUS / "stacks"
EXPECTED = CORPUS / "expected" / "docker-stack-config"
DOCKER_CLI = CORPUS / "expected" / "docker-cli"
RESULTS: dict[str, Any] = json.loads((EXPECTED / "results.json").read_text())

# Stack files that docker read with more than one -c file (stem -> corpus files, in order).
MULTI_FILE = {
    "BretFisher__udemy-docker-mastery__swarm-stack-3_docker-compose.prod.yml": [
        "BretFisher__udemy-docker-mastery__swarm-stack-3_docker-compose.yml",
        "BretFisher__udemy-docker-mastery__swarm-stack-3_docker-compose.prod.yml",
    ],
}

# Env files the corpus runs had next to the stack file. full-example's come from docker/cli;
# vegasbrianc's grafana/config.monitoring is not in the corpus: its two lines are what the
# expected output shows docker read (GF_SECURITY_ADMIN_PASSWORD, GF_USERS_ALLOW_SIGN_UP).
EXTRA_FILES: dict[str, dict[str, str]] = {
    "docker__cli__cli_compose_loader_full-example.yml": {
        "example1.env": (DOCKER_CLI / "example1.env").read_text(),
        "example2.env": (DOCKER_CLI / "example2.env").read_text(),
    },
    "vegasbrianc__prometheus__docker-stack.yml": {
        "grafana/config.monitoring": "GF_SECURITY_ADMIN_PASSWORD=foobar\n"
        "GF_USERS_ALLOW_SIGN_UP=false\n",
    },
}


def stage(name: str, scratch: Path) -> tuple[list[Path], dict[str, str]]:
    """Copy `name` (and its companions) into `scratch`; return the -c files and environment."""
    result = RESULTS[name]
    sources = MULTI_FILE.get(name, [name])
    files = []
    for source, target in zip(sources, result["files"], strict=True):
        shutil.copyfile(STACKS / source, scratch / target)
        files.append(scratch / target)
    for rel, text in EXTRA_FILES.get(name, {}).items():
        (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
        (scratch / rel).write_text(text)
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(scratch / "home")}
    environ.update(result["vars_set"])
    return files, environ


def expected_config(name: str, scratch: Path) -> Any:
    stem = name.rsplit(".", 1)[0]
    text = (EXPECTED / f"{stem}.config.yml").read_text()
    return yaml.safe_load(text.replace("<WORKDIR>", str(scratch)))
