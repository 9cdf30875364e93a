"""The quality gate: promote only a model that is good enough and better than the champion.

Better means significantly better on the same held-out rows. Two equally good
fits differ by a few rows either way; shipping on such a difference would ship
noise (and a dense update) on every retrain, and would let one device's
replayed upload mint a version a minute.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from edgeloop.factory.config import GateSection


@dataclass(frozen=True)
class GateDecision:
    promoted: bool
    metric: str
    candidate: float | None
    champion: float | None
    threshold: float
    min_improvement: float
    reason: str
    # The figure compared with the threshold: the candidate's metric, or its
    # lower confidence bound when gate.confidence is set.
    judged: float | None = None
    # Held-out rows only the candidate gets right, and only the champion does.
    wins: int | None = None
    losses: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"decision": "promoted" if self.promoted else "refused", **asdict(self)}


def wilson_lower_bound(accuracy: float, rows: int, confidence: float) -> float:
    """One-sided lower confidence bound of a proportion measured on `rows` trials."""
    z = NormalDist().inv_cdf(confidence)
    n = float(rows)
    centre = accuracy + z * z / (2 * n)
    margin = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
    return (centre - margin) / (1 + z * z / n)


@dataclass(frozen=True)
class Paired:
    """A paired comparison of two classifiers on the same rows."""

    wins: int  # rows only the challenger gets right
    losses: int  # rows only the incumbent gets right

    @classmethod
    def of(cls, right_challenger: Any, right_incumbent: Any) -> Paired:
        """From two boolean arrays: which rows each model gets right."""
        c = np.asarray(right_challenger, dtype=bool)
        i = np.asarray(right_incumbent, dtype=bool)
        return cls(int(np.sum(c & ~i)), int(np.sum(i & ~c)))

    def significant(self, level: float) -> bool:
        """A one-sided sign test (McNemar) at `level`, normal approximation.

        Only the rows where the two disagree on correctness carry evidence; with
        none, nothing is shown.
        """
        z = NormalDist().inv_cdf(1.0 - level)
        return self.wins - self.losses > z * math.sqrt(max(1, self.wins + self.losses))


def clearly_above(challenger: float, incumbent: float, margin: float) -> bool:
    """The silhouette rule: better by more than the margin."""
    return challenger > incumbent + margin


def decide(
    gate: GateSection,
    candidate: float | None,
    champion: float | None,
    holdout_rows: int = 0,
    paired: Paired | None = None,
) -> GateDecision:
    """Compare the candidate's held-out metric with the threshold and the champion's.

    The champion's figure is measured on the same held-out rows as the
    candidate's, so the comparison is like for like. Beating the champion
    takes min_improvement and, beyond it, significance: the paired test on
    `paired` for classifiers (when given), the silhouette margin for k-means.
    A tie never ships.
    """

    judged = candidate

    def verdict(promoted: bool, reason: str) -> GateDecision:
        return GateDecision(
            promoted,
            gate.metric,
            candidate,
            champion,
            gate.threshold,
            gate.min_improvement,
            reason,
            judged,
            None if paired is None else paired.wins,
            None if paired is None else paired.losses,
        )

    name = gate.metric
    if candidate is None:
        return verdict(False, f"no held-out rows to measure {name} on; upload more data")
    if holdout_rows and holdout_rows < gate.min_holdout_rows:
        return verdict(
            False,
            f"{name} {candidate:.4f} was measured on only {holdout_rows} held-out rows; "
            f"gate.min_holdout_rows is {gate.min_holdout_rows}, so upload more data",
        )
    if gate.confidence and name == "accuracy":
        if holdout_rows < 1:
            return verdict(False, "no held-out rows to bound the accuracy on; upload more data")
        lower = judged = wilson_lower_bound(candidate, holdout_rows, gate.confidence)
        if lower < gate.threshold:
            return verdict(
                False,
                f"accuracy {candidate:.4f} on {holdout_rows} held-out rows has a "
                f"{gate.confidence:.0%} lower bound of {lower:.4f}, below the threshold "
                f"{gate.threshold:.4f}; more data will tighten it",
            )
    if candidate < gate.threshold:
        return verdict(False, f"{name} {candidate:.4f} is below the threshold {gate.threshold:.4f}")
    if champion is not None and candidate == champion:
        return verdict(
            False, f"{name} {candidate:.4f} ties the champion's {champion:.4f}; nothing to ship"
        )
    if champion is not None and candidate < champion + gate.min_improvement:
        return verdict(
            False,
            f"{name} {candidate:.4f} does not beat the champion's {champion:.4f} by "
            f"min_improvement {gate.min_improvement:.4f}",
        )
    if champion is not None and name == "silhouette":
        if not clearly_above(candidate, champion, gate.silhouette_margin):
            return verdict(
                False,
                f"silhouette {candidate:.4f} is not above the champion's {champion:.4f} by "
                f"gate.silhouette_margin {gate.silhouette_margin:.4f}; nothing to ship",
            )
    elif champion is not None and paired is not None and not paired.significant(gate.significance):
        return verdict(
            False,
            f"{name} {candidate:.4f} against the champion's {champion:.4f} on the same "
            f"held-out rows is not a significant improvement: the candidate alone gets "
            f"{paired.wins} rows right, the champion alone {paired.losses} (one-sided sign "
            f"test at gate.significance {gate.significance:g}); nothing to ship",
        )
    if champion is None:
        return verdict(
            True,
            f"{name} {candidate:.4f} clears the threshold {gate.threshold:.4f}; no champion yet",
        )
    return verdict(
        True,
        f"{name} {candidate:.4f} clears the threshold {gate.threshold:.4f} and beats the "
        f"champion's {champion:.4f} by {candidate - champion:+.4f}",
    )
