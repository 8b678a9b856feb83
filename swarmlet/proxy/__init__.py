"""The data plane: a round-robin proxy on every node for published ports and service VIPs.

`routes` computes, purely, which endpoints serve which port from the replicated and observed
state; `mesh` owns the listeners and applies new routes as they come;
`tcp` and `udp` relay connections and flows; `counters` keeps per-port statistics; the
`worker_*` modules run optional extra processes on the same ports (SO_REUSEPORT): the agent's
pool, the worker process, and the messages between them. The proxy keeps its last routes while
there is no leader: it needs Raft only for new ones.
"""
