"""The stack loader's data files ship inside the package."""

from __future__ import annotations

from pathlib import Path

import swarmlet.stack


def test_schema_ships_as_package_data() -> None:
    package = Path(swarmlet.stack.__file__).parent
    assert (package / "config_schema_v3.13.json").is_file()
