"""Growing, jittered pauses between retries: reconnecting, re-fetching, re-uploading.

A fleet that lost its broker or its cloud all at once must not come back all at
once, or the first thing the recovering service sees is every device retrying
on the same beat. Each pause is drawn uniformly from [0, delay] ("full jitter")
and the delay doubles up to a cap; a success resets it.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, first: float, cap: float, rng: random.Random | None = None) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"backoff needs 0 < first <= cap, got first={first}, cap={cap}")
        self.first, self.cap = first, cap
        self._delay = first
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The pause before the next attempt; the one after may be twice as long."""
        pause = self._rng.uniform(0, self._delay)
        self._delay = min(self._delay * 2, self.cap)
        return pause

    def reset(self) -> None:
        self._delay = self.first
