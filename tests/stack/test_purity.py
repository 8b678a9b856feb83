"""The stack loader is a pure core: it never imports I/O-driving or clock modules."""

from __future__ import annotations

from pathlib import Path

import swarmlet.stack
from tests.purity import imported_roots

FORBIDDEN = {"trio", "socket", "time", "docker", "psutil", "random", "subprocess"}


def test_stack_modules_import_no_io_drivers_or_clock() -> None:
    package = Path(swarmlet.stack.__file__).parent
    for module in package.glob("*.py"):
        assert not imported_roots(module) & FORBIDDEN, module.name


def test_schema_ships_as_package_data() -> None:
    package = Path(swarmlet.stack.__file__).parent
    assert (package / "config_schema_v3.13.json").is_file()
