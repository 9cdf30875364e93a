"""The loop benchmark reports a gate refusal as a result; it does not crash on one.

A fresh run once raised `TimeoutError: v2 was not published` because the gate
refused the second round's retrain. These drive the section's decision and
summary with a registry scripted call by call, so no test waits on a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from bench.loop import ROUNDS, await_decision, summary

REFUSED = {
    "run_id": "r2",
    "decision": "refused",
    "reason": "silhouette 0.6780 is not above the champion's 0.6980",
}


@dataclass
class ScriptedRegistry:
    """Each read returns the next state of the script, then keeps the last."""

    champions: list[int]
    newest_runs: list[dict[str, Any] | None]
    pending: list[list[str]]
    reads: int = field(default=0)

    def _at(self, states: list[Any]) -> Any:
        return states[min(self.reads, len(states) - 1)]

    def champion(self, model: str) -> dict[str, Any] | None:
        self.reads += 1
        return {"version": self._at(self.champions)}

    def runs(self, model: str, limit: int = 20) -> list[dict[str, Any]]:
        run = self._at(self.newest_runs)
        return [] if run is None else [run]

    def pending_uploads(self, model: str) -> list[str]:
        return list(self._at(self.pending))


def test_a_refused_round_is_a_result() -> None:
    registry = ScriptedRegistry([1], [None, REFUSED], [[]])
    decision = await_decision(registry, "vibration", 2, {"r1"}, timeout=30)
    assert decision.refusal == REFUSED


def test_an_early_refusal_with_uploads_pending_waits_for_the_run_that_ships() -> None:
    # The first run saw part of the round's uploads and refused; the rest were still
    # pending, and the run over them shipped v2.
    registry = ScriptedRegistry([1, 1, 1, 2], [REFUSED], [["b7"], ["b7"], ["b7"], []])
    decision = await_decision(registry, "vibration", 2, {"r1"}, timeout=30)
    assert decision.refusal is None


def test_a_run_from_before_the_round_is_not_its_refusal() -> None:
    registry = ScriptedRegistry([1, 1, 2], [REFUSED], [[]])
    decision = await_decision(registry, "vibration", 2, {"r1", "r2"}, timeout=30)
    assert decision.refusal is None


def test_a_retrain_that_never_decides_is_still_an_error() -> None:
    registry = ScriptedRegistry([1], [None], [["b1"]])
    with pytest.raises(TimeoutError, match="neither published nor refused"):
        await_decision(registry, "vibration", 2, set(), timeout=0.2)


def test_the_summary_of_rounds_all_refused_reports_them_and_misses_the_goal() -> None:
    refused = [{"round": 2, "target": 2, "reason": REFUSED["reason"]}]
    figures = summary([], refused)
    assert figures["refused_rounds"] == refused
    assert figures["worst_upload_to_all_swapped_s"] is None
    assert figures["meets_goal"] is False


def test_the_summary_needs_every_round_shipped_to_meet_the_goal() -> None:
    shipped = {"version": 2, "upload_to_all_swapped_s": 1.0}
    assert summary([shipped] * ROUNDS, [])["meets_goal"] is True
    assert summary([shipped] * (ROUNDS - 1), [{"round": 2}])["meets_goal"] is False
