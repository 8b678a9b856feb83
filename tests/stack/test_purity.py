"""The stack loader is a pure core: it never imports I/O-driving or clock modules."""

from __future__ import annotations

import ast
from pathlib import Path

import swarmlet.stack

FORBIDDEN = {"trio", "socket", "time", "docker", "psutil", "random", "subprocess"}


def test_stack_modules_import_no_io_drivers_or_clock() -> None:
    package = Path(swarmlet.stack.__file__).parent
    for module in package.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{module.name} imports {name}"


def test_schema_ships_as_package_data() -> None:
    package = Path(swarmlet.stack.__file__).parent
    assert (package / "config_schema_v3.13.json").is_file()
