"""The composition root: one agent process, built from the parts below it.

`main` runs an agent (logging, signals, the control socket, a clean stop); `agent` composes Raft,
gossip, the executor, the proxy, the leader's duties and the key ring; `config`, `bootstrap`
(first Raft storage), `replicated` (the cluster state as Raft's state machine), `forwarding`
(writes sent to the leader) and `events` (the event feed) are its pieces. Decisions live in the
packages below; this one wires them together and owns their lifetimes.
"""
