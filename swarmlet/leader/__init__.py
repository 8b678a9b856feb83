"""What only the Raft leader does: decide, and commit the difference.

`duties` is the leader's loop (a narrow `DutiesHost` protocol, not the agent): it reads the desired
state and the observed state, asks the pure planners what to change, and proposes the commands.
The planners are pure: `orchestrator/` (replace, move, roll, rebalance, reap), `scheduler` (which
node, with reasons for every rejection), `voters` (which managers vote in Raft), `autoscaler`
(replica counts from load), `depends_on` (first-start order of a stack's services), and
`observation` (what the leader takes as a node's readiness and its tasks' actual states).
Nothing here runs containers, opens sockets or reads the clock: time and ids come in as values.
"""
