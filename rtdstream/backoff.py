"""Capped exponential backoff with jitter, for every reconnect and retry loop."""

from __future__ import annotations

import random

#: The jitter's source when none is given. One per process: seeding a ``Random`` reads the
#: operating system's entropy (15 us here), and a Backoff is made for every message the
#: bridge and the worker's stages produce, in case its delivery has to be retried.
_SHARED_RNG = random.Random()


class Backoff:
    """Delays of ``initial * 2**n`` capped at ``cap``, each drawn from its upper half.

    The jitter spreads the reconnects of many bridges or sinks after a shared
    outage; keeping the lower half out keeps the delay close to what the log says.
    """

    def __init__(self, initial: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.cap = cap
        self._attempt = 0
        self._rng = rng or _SHARED_RNG

    def next(self) -> float:
        ceiling = min(self.cap, self.initial * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 32)
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0
