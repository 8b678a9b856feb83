"""Bytes between processes: the codec, the catalog of wire type ids, the sealed transport, and the
request/reply messages between agents.

`codec` turns frozen dataclasses into msgpack and back, validating everything decoded, after
`bounds` has checked what unpacking a peer's bytes may allocate; `catalog` gives every list of
wire types its permanent block of ids; `transport` carries sealed datagrams and framed streams
between agents (it uses `crypto`, which therefore sits below this package); `peer_rpc` defines
the agent-to-agent requests and replies. Nothing here knows what the messages mean.
"""
