"""A deterministic stand-in for per-node signing keys: HMAC-SHA256 under a key derived from the
node's name. Pure and seed-free, so signed runs replay exactly; the agent uses Ed25519."""

from __future__ import annotations

import hashlib
import hmac


def _key(node: str) -> bytes:
    return hashlib.sha256(b"fake-node-key:" + node.encode()).digest()


class Signer:
    """`sign` for the core of `node`; counts its calls."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.calls = 0

    def __call__(self, data: bytes) -> bytes:
        self.calls += 1
        return hmac.new(_key(self.node), data, hashlib.sha256).digest()


class Verifier:
    """`verify` against every node's fake key; counts its calls. `known` limits the nodes it has
    a key for (None: all), as the agent only knows the nodes in its replicated state."""

    def __init__(self, known: set[str] | None = None) -> None:
        self.known = known
        self.calls = 0

    def __call__(self, node: str, data: bytes, signature: bytes) -> bool | None:
        self.calls += 1
        if self.known is not None and node not in self.known:
            return None  # no key for it: the agent's answer too
        expected = hmac.new(_key(node), data, hashlib.sha256).digest()
        return hmac.compare_digest(expected, signature)
