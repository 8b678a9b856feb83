"""Who a node is and what it may read: identity on disk, keys, joining, and secrets.

`datadir` holds the node's identity and keys on disk; `keyring` makes the managers' key follow the
node's role; `join` is the join handshake, both sides; `propose_auth` lets the leader commit only
writes that managers signed; `secret_access` decides (purely) which secrets a node may receive, and
`secret_delivery` delivers them sealed to that node. The primitives themselves are in
`swarmlet.crypto`, below the transport that uses them.
"""
