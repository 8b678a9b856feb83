"""The `swarmlet` command: `main` (entry point, exit statuses), `common` (shared helpers), and one
module per command group. A command imports only what it uses, so a quick command starts quickly.
"""
