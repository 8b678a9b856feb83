"""swarmlet: a lightweight, Docker-Swarm-like container orchestrator."""

__version__ = "0.1.0"
