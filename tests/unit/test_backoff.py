"""Retry pauses: jittered, doubling to a cap, reset by a success."""

from __future__ import annotations

import random

import pytest

from edge.backoff import Backoff


def test_pauses_are_jittered_below_a_doubling_delay_up_to_the_cap() -> None:
    backoff = Backoff(1.0, 8.0, random.Random(0))
    bounds = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    pauses = [backoff.next() for _ in bounds]
    assert all(0 <= p <= b for p, b in zip(pauses, bounds, strict=True))
    assert max(pauses[3:]) > 2.0  # it did grow
    backoff.reset()
    assert backoff.next() <= 1.0


def test_a_fleet_retrying_together_spreads_out() -> None:
    """What the jitter is for: 1,000 devices failing at once do not retry at once."""
    fleet = [Backoff(2.0, 120.0, random.Random(i)) for i in range(1000)]
    for device in fleet:
        device.next()
    third = [device.next() for device in fleet]  # second retry, delay 4 s
    per_second = [sum(1 for p in third if s <= p < s + 1) for s in range(4)]
    assert max(per_second) < 300  # about 250 per second, not 1,000 in one


def test_nonsense_delays_are_refused() -> None:
    with pytest.raises(ValueError, match="0 < first <= cap"):
        Backoff(0.0, 1.0)
    with pytest.raises(ValueError, match="0 < first <= cap"):
        Backoff(5.0, 1.0)
