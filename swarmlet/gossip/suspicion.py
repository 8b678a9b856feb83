"""One suspicion timer: Lifeguard §IV-B dynamic suspicion (memberlist suspicion.go).

A suspicion starts at its max timeout and shrinks towards its min as independent members confirm
it (each accuser counts once, the first one not at all). It owns no clock: its `deadline_s` is
read by the core, which declares the member dead when `now` reaches it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import maths


@dataclass(slots=True)
class Suspicion:
    started_s: float
    k: int  # confirmations expected; 0: none, the timeout is min from the start
    min_s: float
    max_s: float
    deadline_s: float
    # The members heard accusing in their own name (a datagram they signed, or this member's
    # own probe), the first one included; one relayed in another's name is not counted, so
    # one member, whatever names it relays, is one accuser at most.
    accusers: set[str] = field(default_factory=set)
    probed_s: float = -math.inf  # when the core last probed the suspect out of turn

    @classmethod
    def start(
        cls, now: float, accuser: str | None, k: int, min_s: float, max_s: float
    ) -> Suspicion:
        """`accuser`: who started it, in its own name (None: a relay's word only)."""
        timeout_s = max_s if k >= 1 else min_s
        return cls(now, k, min_s, max_s, now + timeout_s, {accuser} if accuser else set())

    @property
    def confirmations(self) -> int:
        """Lifeguard's independent confirmations: the accusers after the first, at most k."""
        return min(self.k, max(0, len(self.accusers) - 1))

    def confirm(self, accuser: str) -> bool:
        """Count `accuser`'s own word once; True if it was a new confirmation (the core
        re-gossips it)."""
        before = self.confirmations
        if before >= self.k or accuser in self.accusers:
            return False
        self.accusers.add(accuser)
        if self.confirmations == before:
            return False  # the first accuser heard in its own name: no confirmation yet
        timeout_s = maths.suspicion_remaining_timeout_s(
            self.confirmations, self.k, self.min_s, self.max_s
        )
        self.deadline_s = self.started_s + timeout_s
        return True
