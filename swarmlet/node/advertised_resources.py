"""The generic resources this node advertises, kept in its data dir (`generic-resources`).

`swarmlet init/join/agent --generic-resource gpu=UUID1 --generic-resource ssd=3` writes the list
(one `KIND=VALUE` a line, as given); the agent reads it at every start and makes its node record
say the same (`node.agent`), so a host whose devices change is re-advertised by restarting its
agent with the new list. The file is optional: absent means none, which is also what an agent
of an older release, which ignores it, advertises (no data-dir format change).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from swarmlet.security.datadir import write_atomic
from swarmlet.state.generic_resources import parse_advertised

FILE_NAME = "generic-resources"


def read_advertised(datadir_path: Path) -> tuple[str, ...]:
    """The stored list; () if there is none. Checked: a hand-edited file that is malformed is
    refused (UsageError naming the file) rather than advertised half."""
    path = datadir_path / FILE_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return ()
    entries = tuple(line.strip() for line in text.splitlines() if line.strip())
    parse_advertised(entries, flag=str(path))
    return entries


def write_advertised(datadir_path: Path, entries: Sequence[str]) -> None:
    """Replace the stored list (atomically and durably: a crash, a power cut included, leaves
    the old list or the new one, never an empty or partial file)."""
    parse_advertised(entries)
    text = "".join(f"{entry.strip()}\n" for entry in entries)
    write_atomic(datadir_path / FILE_NAME, text.encode(), 0o644)
