"""Where a node's data dir is, and where its control socket is in it.

This is the first thing every `swarmlet` command needs, so it is kept apart from `datadir`,
which lays out the rest of the directory (and re-exports these names): finding the agent must
not load what reading the node's identity and keys needs (dataclasses, msgpack, the crypto),
which would cost a quick command more than all the rest it loads.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SWARMLET_DATA_DIR"
SOCKET_FILE = "control.sock"  # the control API (Unix socket, 0600), in the data dir


def default_data_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/swarmlet")
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state")) / "swarmlet"


def control_socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_FILE
