"""The control API: what the `swarmlet` command and the dashboard ask the local agent.

`control_socket` is the Unix-socket server (and a trio client), `control_protocol` its framing
and errors, `control_client` the blocking client the command uses; `nodes`, `services`, `stacks`
and `secrets` are its handlers, which see the agent only through the protocols of `cluster`
(never the agent itself), so they can be read, and tested, against what they use.
"""
