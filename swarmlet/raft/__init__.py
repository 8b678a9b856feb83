"""Raft: the replicated log behind the desired state.

`core` is the sans-I/O protocol (election, replication, membership, snapshots, reads), built from
`log`, `progress`, `quorum`, `messages` and `types`; `interface` is its public surface. `storage`
keeps the log durable on disk (its byte format in `disk_format`, reading it back and repairing a
torn tail in `recovery`) and `driver` runs the core under trio. Raft replicates opaque
bytes: what they mean is the user's (`state_machine` is the interface it applies them through),
so nothing here imports `swarmlet.state`.
"""
