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
    confirmers: set[str] = field(default_factory=set)
    confirmations: int = 0
    probed_s: float = -math.inf  # when the core last probed the suspect out of turn

    @classmethod
    def start(
        cls, now: float, accuser: str | None, k: int, min_s: float, max_s: float
    ) -> Suspicion:
        """`accuser`: who started it, which confirms nothing more (None: not known)."""
        timeout_s = max_s if k >= 1 else min_s
        return cls(now, k, min_s, max_s, now + timeout_s, {accuser} if accuser else set())

    def confirm(self, accuser: str) -> bool:
        """Count `accuser` once; True if it was a new confirmation (the core re-gossips it)."""
        if self.confirmations >= self.k or accuser in self.confirmers:
            return False
        self.confirmers.add(accuser)
        self.confirmations += 1
        timeout_s = maths.suspicion_remaining_timeout_s(
            self.confirmations, self.k, self.min_s, self.max_s
        )
        self.deadline_s = self.started_s + timeout_s
        return True
