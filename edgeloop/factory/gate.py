"""The quality gate: promote only a model that is good enough and better than the champion."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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

    def to_json(self) -> dict[str, Any]:
        return {"decision": "promoted" if self.promoted else "refused", **asdict(self)}


def decide(gate: GateSection, candidate: float | None, champion: float | None) -> GateDecision:
    """Compare the candidate's held-out metric with the threshold and the champion's.

    The champion's figure is measured on the same held-out rows as the
    candidate's, so the comparison is like for like.
    """

    def verdict(promoted: bool, reason: str) -> GateDecision:
        return GateDecision(
            promoted, gate.metric, candidate, champion, gate.threshold, gate.min_improvement, reason
        )

    name = gate.metric
    if candidate is None:
        return verdict(False, f"no held-out rows to measure {name} on; upload more data")
    if candidate < gate.threshold:
        return verdict(False, f"{name} {candidate:.4f} is below the threshold {gate.threshold:.4f}")
    if champion is not None and candidate < champion + gate.min_improvement:
        return verdict(
            False,
            f"{name} {candidate:.4f} does not beat the champion's {champion:.4f} by "
            f"min_improvement {gate.min_improvement:.4f}",
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
