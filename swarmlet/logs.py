"""How every swarmlet process logs: the agent and its proxy worker processes alike."""

from __future__ import annotations

import logging
import os


def configure_logging() -> None:
    """Log to stderr at `SWARMLET_LOG_LEVEL` (default INFO)."""
    level = os.environ.get("SWARMLET_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
