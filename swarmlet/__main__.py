from swarmlet.cli import entrypoint

entrypoint()
