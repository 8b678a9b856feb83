"""Membership and failure detection: SWIM with Lifeguard, after memberlist.

`core` is the sans-I/O protocol, built from `messages`, `broadcast`, `suspicion` and the formulas
of `maths`, tuned by `config`; `driver` runs it under trio over the transport. Gossip spreads
membership and opaque per-node payloads; what those payloads mean belongs to the layers above.
"""
