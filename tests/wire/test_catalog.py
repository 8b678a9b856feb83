"""wire.catalog: the blocks of type ids do not overlap, and every registered list fits its block.

A list that outgrew its block would hand the next block's ids to its own new classes, and a peer
or a Raft log written before would then decode one type as another. The registrations are found
by reading the source (every `register_all(catalog.BLOCK, LIST)` call in swarmlet), so a module
that registers a new list is checked without being named here.
"""

from __future__ import annotations

import ast
import importlib
from itertools import pairwise
from pathlib import Path

import pytest

import swarmlet
from swarmlet.wire import catalog
from swarmlet.wire import codec as wire

SWARMLET_DIR = Path(swarmlet.__file__).parent
RANGES = {name: value for name, value in vars(catalog).items() if name.endswith("_RANGE")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SWARMLET_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _codec_calls() -> list[tuple[str, ast.Call]]:
    """(module:line, call) for every call of the codec's `register` or `register_all`."""
    calls = []
    for path in sorted(SWARMLET_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("register_all", "register")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in ("wire", "codec")
            ):
                calls.append((f"{_module_name(path)}:{node.lineno}", node))
    return calls


def _as_registration(call: ast.Call) -> tuple[str, str] | None:
    """(block name, list name) for `register_all(catalog.BLOCK, LIST)`; None for anything else."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "register_all"):
        return None
    if len(call.args) != 2 or call.keywords:
        return None
    block, classes = call.args
    if (
        isinstance(block, ast.Attribute)
        and isinstance(block.value, ast.Name)
        and block.value.id == "catalog"
        and isinstance(classes, ast.Name)
    ):
        return block.attr, classes.id
    return None


def registrations() -> list[tuple[str, str, str]]:
    """(module, block name, list name) for every registration in swarmlet."""
    found = []
    for where, call in _codec_calls():
        registration = _as_registration(call)
        if registration is not None:
            found.append((where.partition(":")[0], *registration))
    return found


def test_every_registration_names_a_block_and_a_list() -> None:
    odd = [where for where, call in _codec_calls() if _as_registration(call) is None]
    assert not odd, f"register types as register_all(catalog.BLOCK, LIST), not: {odd}"


def test_the_blocks_do_not_overlap() -> None:
    blocks = sorted(catalog.BLOCKS.items(), key=lambda item: item[1].start)
    for (name, block), (next_name, next_block) in pairwise(blocks):
        assert block.stop <= next_block.start, f"{name} overlaps {next_name}"
    for name, block in blocks:
        assert len(block) > 0, f"{name} is empty"


def test_every_block_starts_at_its_constant_and_lies_in_one_range() -> None:
    for name, block in catalog.BLOCKS.items():
        assert getattr(catalog, name) == block.start, name
        containing = [r for r, ids in RANGES.items() if ids.start <= block.start < ids.stop]
        assert len(containing) == 1, f"{name} is in {containing}"
        assert block.stop <= RANGES[containing[0]].stop, f"{name} leaves {containing[0]}"


def test_every_block_constant_has_a_block() -> None:
    constants = {
        name
        for name, value in vars(catalog).items()
        if name.isupper() and isinstance(value, int) and not isinstance(value, bool)
    }
    assert constants == catalog.BLOCKS.keys()


def test_each_block_numbers_one_list() -> None:
    blocks = [block for _, block, _ in registrations()]
    assert sorted(blocks) == sorted(set(blocks)), "a block is registered twice"
    assert set(blocks) <= catalog.BLOCKS.keys()


@pytest.mark.parametrize(
    ("module", "block", "classes"),
    registrations(),
    ids=[f"{block}:{module}" for module, block, _ in registrations()],
)
def test_each_registered_list_fits_in_its_block(module: str, block: str, classes: str) -> None:
    registered = getattr(importlib.import_module(module), classes)
    ids = catalog.BLOCKS[block]
    assert len(registered) <= len(ids), f"{module}.{classes} outgrew {block} ({len(ids)} ids)"
    assert all(wire.registered(cls) for cls in registered)
