"""The gate: threshold, champion margin, and the confidence bound for small held-out sets."""

from __future__ import annotations

import pytest

from edgeloop.factory.config import GateSection
from edgeloop.factory.gate import decide, wilson_lower_bound


def _gate(**fields: float) -> GateSection:
    return GateSection.model_validate({"metric": "accuracy", "threshold": 0.9, **fields})


def test_promotes_above_the_threshold_without_a_champion() -> None:
    decision = decide(_gate(), 0.95, None)
    assert decision.promoted
    assert "no champion yet" in decision.reason


def test_refuses_below_the_threshold() -> None:
    decision = decide(_gate(), 0.85, None)
    assert not decision.promoted
    assert decision.reason == "accuracy 0.8500 is below the threshold 0.9000"


def test_must_beat_the_champion_by_the_margin() -> None:
    assert not decide(_gate(min_improvement=0.01), 0.955, 0.95).promoted
    assert decide(_gate(min_improvement=0.01), 0.961, 0.95).promoted


def test_no_holdout_means_no_promotion() -> None:
    assert not decide(_gate(), None, None).promoted


def test_a_lucky_score_on_few_rows_is_refused_under_a_confidence_bound() -> None:
    gate = _gate(confidence=0.9)
    small = decide(gate, 34 / 36, None, holdout_rows=36)
    assert not small.promoted
    assert "90% lower bound of 0.87" in small.reason
    large = decide(gate, 0.955, None, holdout_rows=300)
    assert large.promoted


def test_wilson_bound_is_below_the_estimate_and_tightens_with_rows() -> None:
    bounds = [wilson_lower_bound(0.95, n, 0.9) for n in (20, 100, 1000, 100000)]
    assert all(b < 0.95 for b in bounds)
    assert bounds == sorted(bounds)
    assert bounds[-1] == pytest.approx(0.95, abs=0.002)
    assert wilson_lower_bound(1.0, 10, 0.95) < 1.0


def test_a_metric_on_too_few_held_out_rows_is_not_judged() -> None:
    gate = GateSection.model_validate(
        {"metric": "silhouette", "threshold": 0.5, "min_holdout_rows": 20}
    )
    refused = decide(gate, 0.9, None, holdout_rows=19)
    assert not refused.promoted
    assert "only 19 held-out rows" in refused.reason
    assert decide(gate, 0.9, None, holdout_rows=20).promoted
