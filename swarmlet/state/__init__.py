"""The cluster's state as values: what users ask for, and what nodes report.

`model` holds the desired state's value types (nodes, services and their specs, tasks, secrets);
`commands` the changes to it that Raft replicates; `machine` the `ClusterState` that applies them,
the only code that changes replicated state. `observed` holds what nodes report through gossip
(never replicated through Raft). `specparse` and `constraints` parse what users write into specs,
so the CLI, the API and the stack loader read it the same way. All of it is pure: no I/O, no
clock, nothing of Raft or of the network.
"""
