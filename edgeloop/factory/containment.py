"""A training failure that one batch causes stays with that batch.

Bounded decoding (edgeloop.factory.data) refuses the inputs known to break a
fit, but a batch can still break one in a way nobody listed. Then the run is
not failed as a whole (every later run would read the same batch and fail
again: one device could stop its model's updates for good). Instead the
batches that make it fail are found by leaving halves out, the way delta
debugging narrows a failing input, and the run goes on without them; the
caller quarantines them with the reason.

Only a failure of the data's kind counts (`DATA_FAILURES`: numbers a fit or a
check cannot take). Anything else (the network, the disk, a bug) is raised as
it was: leaving data out would not cure it, and guessing would quarantine
honest uploads.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")

# What a batch's numbers can make a fit raise: scikit-learn's input checks
# (ValueError), overflow and division (ArithmeticError), a singular matrix.
DATA_FAILURES: tuple[type[Exception], ...] = (ValueError, ArithmeticError, np.linalg.LinAlgError)
# Training attempts one run may spend finding culprits: about 2 log2(batches)
# per culprit, so a handful of bad batches among thousands.
MAX_ATTEMPTS = 48


@dataclass(frozen=True)
class Contained(Generic[K, R]):
    """The run's result without `culprits`, and why each was left out."""

    result: R
    culprits: dict[K, str]


class _OutOfAttempts(Exception):
    pass


def train_contained(
    batches: Sequence[K],
    attempt: Callable[[Sequence[K]], R],
    max_attempts: int = MAX_ATTEMPTS,
) -> Contained[K, R]:
    """`attempt(batches)`, or, if it fails with a data failure, `attempt` of the batches
    left once the fewest batches whose absence makes it succeed are found.

    Raises the original failure when no such batches can be pinned down (the
    failure needs no particular batch, or more attempts than allowed).
    """
    try:
        return Contained(attempt(batches), {})
    except DATA_FAILURES as exc:
        failure = exc
    results: dict[frozenset[K], R | BaseException] = {}
    spent = 0

    def outcome(keep: Sequence[K]) -> R | BaseException:
        nonlocal spent
        key = frozenset(keep)
        if key not in results:
            if spent >= max_attempts:
                raise _OutOfAttempts
            spent += 1
            try:
                results[key] = attempt(keep)
            except DATA_FAILURES as exc:
                results[key] = exc
        return results[key]

    def fails(keep: Sequence[K]) -> bool:
        return isinstance(outcome(keep), BaseException)

    def without(out: Sequence[K]) -> list[K]:
        gone = set(out)
        return [b for b in batches if b not in gone]

    def culprits(candidates: Sequence[K], kept_out: frozenset[K]) -> set[K] | None:
        """The fewest of `candidates` to leave out (besides `kept_out`) for success."""
        if len(candidates) == 1:
            return set(candidates) if not fails(without([*kept_out, *candidates])) else None
        half = len(candidates) // 2
        first, second = candidates[:half], candidates[half:]
        for part in (first, second):
            if not fails(without([*kept_out, *part])):
                return culprits(part, kept_out)
        # Both halves hold culprits: find each with the other half left out too.
        in_first = culprits(first, kept_out | frozenset(second))
        in_second = culprits(second, kept_out | frozenset(first))
        if in_first is None or in_second is None:
            return None
        found = in_first | in_second
        return found if not fails(without([*kept_out, *found])) else None

    try:
        found = culprits(list(batches), frozenset()) if len(batches) > 1 else None
    except _OutOfAttempts:
        found = None
    if not found:
        raise failure
    result = outcome(without(sorted(found, key=list(batches).index)))
    assert not isinstance(result, BaseException)
    reason = f"the run failed with it ({type(failure).__name__}: {str(failure)[:200]})"
    return Contained(result, dict.fromkeys(found, reason))
