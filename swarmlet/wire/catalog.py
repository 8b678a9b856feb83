"""Where every wire type id lives: one block of ids per list of message classes.

Type ids are permanent: they are persisted in Raft logs and sent to peers, so a block's start never
moves and the class list it numbers is ONLY APPENDED TO (memberlist: "only append to this list").
Each module that defines messages registers its own list under its block when it is imported
(`codec.register_all(catalog.RAFT_MESSAGES, MESSAGES)`): a process therefore knows every type that
its code can name, and this table imports nothing, so the modules below it and above it never form
a cycle. The blocks must not overlap; `tests/wire/test_catalog.py` checks that, and the codec's
tests pin every class to its id.
"""

from __future__ import annotations

GOSSIP_RANGE = range(1, 100)
RAFT_RANGE = range(100, 200)
STATE_RANGE = range(200, 400)
CONTROL_RANGE = range(400, 600)

# gossip/: the SWIM messages, then the driver's datagram wrapper.
GOSSIP_MESSAGES = GOSSIP_RANGE.start
GOSSIP_DATAGRAM = GOSSIP_RANGE.start + 50
# raft/: the log's value types, the protocol messages, the driver's stream hello.
RAFT_TYPES = RAFT_RANGE.start
RAFT_MESSAGES = RAFT_RANGE.start + 20
RAFT_STREAM = RAFT_RANGE.start + 80
# state/: the model, the commands, the snapshot, a worker's view, the observed state.
STATE_MODEL = STATE_RANGE.start
STATE_COMMANDS = STATE_RANGE.start + 50
STATE_SNAPSHOT = STATE_RANGE.start + 100
STATE_WORKER_VIEW = STATE_RANGE.start + 110  # what a manager serves a worker (issue #16)
STATE_OBSERVED = STATE_RANGE.start + 120
# wire/peer_rpc: requests and replies between agents.
PEER_RPC = CONTROL_RANGE.start
# proxy/: between an agent and its own proxy worker processes (same version on both ends).
PROXY_WORKERS = CONTROL_RANGE.start + 100

# Each block and the largest number of classes it may ever hold (the gap to the next block).
BLOCKS: dict[str, range] = {
    "GOSSIP_MESSAGES": range(GOSSIP_MESSAGES, GOSSIP_DATAGRAM),
    "GOSSIP_DATAGRAM": range(GOSSIP_DATAGRAM, GOSSIP_RANGE.stop),
    "RAFT_TYPES": range(RAFT_TYPES, RAFT_MESSAGES),
    "RAFT_MESSAGES": range(RAFT_MESSAGES, RAFT_STREAM),
    "RAFT_STREAM": range(RAFT_STREAM, RAFT_RANGE.stop),
    "STATE_MODEL": range(STATE_MODEL, STATE_COMMANDS),
    "STATE_COMMANDS": range(STATE_COMMANDS, STATE_SNAPSHOT),
    "STATE_SNAPSHOT": range(STATE_SNAPSHOT, STATE_WORKER_VIEW),
    "STATE_WORKER_VIEW": range(STATE_WORKER_VIEW, STATE_OBSERVED),
    "STATE_OBSERVED": range(STATE_OBSERVED, STATE_RANGE.stop),
    "PEER_RPC": range(PEER_RPC, PROXY_WORKERS),
    "PROXY_WORKERS": range(PROXY_WORKERS, CONTROL_RANGE.stop),
}
