from swarmlet.cli.main import entrypoint

entrypoint()
