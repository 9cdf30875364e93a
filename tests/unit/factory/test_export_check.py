"""When an export reproduces scikit-learn closely enough to ship."""

from __future__ import annotations

import numpy as np

from edgeloop.factory.run import export_agrees


def _probabilities(rows: int, seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(0.0, 3.0, size=(rows, 10))
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    out: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return out


def _flip(rows: np.ndarray, count: int) -> np.ndarray:
    """Move `count` rows' top class to their second choice by a hair, as int8 does at a border."""
    out = rows.copy()
    for i in range(count):
        first, second = np.argsort(out[i])[-1], np.argsort(out[i])[-2]
        out[i, first], out[i, second] = out[i, second], out[i, first] + 1e-6
    return out


def test_an_int8_export_may_change_one_borderline_decision_of_a_small_holdout() -> None:
    want = _probabilities(36)
    got = want + 1e-3
    got[:1] = _flip(want[:1], 1)
    assert export_agrees(got, want, "int8", anomaly=False)["ok"]
    assert not export_agrees(got, want, "none", anomaly=False)["ok"]


def test_an_int8_export_that_changes_more_than_one_percent_is_refused() -> None:
    want = _probabilities(36)
    assert not export_agrees(_flip(want, 2), want, "int8", anomaly=False)["ok"]
    many = _probabilities(1000)
    assert export_agrees(_flip(many, 10), many, "int8", anomaly=False)["ok"]
    assert not export_agrees(_flip(many, 11), many, "int8", anomaly=False)["ok"]


def test_a_broken_int8_graph_is_refused_even_when_decisions_agree() -> None:
    want = _probabilities(200)
    # A wrong scale: the winner keeps winning, every probability is off.
    got = want**0.5 / (want**0.5).sum(axis=1, keepdims=True)
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()
    verdict = export_agrees(got, want, "int8", anomaly=False)
    assert not verdict["ok"]
    assert verdict["mean_error"] > 0.01
