"""The single-sample scoring path decides exactly as the batch path does.

`Scorer.score_one` works on Python floats for speed; these tests hold it to the
NumPy decisions of `Scorer.score` and `CompiledModel.predict`'s checked path.
"""

from __future__ import annotations

from dataclasses import replace
from typing import cast

import numpy as np
import numpy.typing as npt
import pytest

from edge.scoring import LoadedModel, Scorer
from edgeloop.contract import Manifest, TensorSpec
from edgeloop.factory.deltas import plan_deltas
from edgeloop.factory.release import build_release
from edgeloop.runtime import CompiledModel
from tests.factories import planted_outliers
from tests.support_release import CONFIG, vibration_runs


def _manifest() -> tuple[Manifest, bytes]:
    run = vibration_runs()[0]
    assert run.tflite is not None
    manifest, _ = build_release(CONFIG, 1, run.tflite, plan_deltas(run.tflite, {}), run.record)
    return manifest, run.tflite


def _rows() -> npt.NDArray[np.float32]:
    X, _ = planted_outliers(400, seed=5, outlier_share=0.05)
    return X.astype(np.float32)


class _FixedOutput:
    """A runtime that answers every sample with the same output."""

    def __init__(self, output: list[float] | list[list[float]]) -> None:
        self.output = np.asarray(output, dtype=np.float32)

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        return self.output


def test_an_anomaly_detector_scores_one_sample_as_a_batch_of_one() -> None:
    manifest, model = _manifest()
    assert manifest.decision_threshold is not None
    scorer = Scorer(0.6)
    scorer.swap(LoadedModel(manifest, CompiledModel(model)))
    alarms = 0
    for x in _rows():
        one = scorer.score_one(x[None, :])
        batch = scorer.score(x[None, :])
        assert one is not None
        assert batch is not None
        value, alarm, version, _ = one
        assert value == float(batch.outputs[0])
        assert alarm == bool(batch.alarms[0])
        assert version == batch.version == 1
        alarms += alarm
    assert 0 < alarms < len(_rows())  # both decisions were exercised


def test_a_threshold_float32_cannot_hold_is_compared_as_float32() -> None:
    manifest, model = _manifest()
    runtime = CompiledModel(model)
    x = _rows()[:1]
    output = float(runtime.predict(x)[0])
    # The float64 just below the output: a float64 comparison alarms, while the
    # batch path (NumPy, in the outputs' float32) rounds it to the output and does not.
    threshold = float(np.nextafter(output, -np.inf))
    assert float(np.float32(threshold)) == output
    scorer = Scorer(0.6)
    scorer.swap(LoadedModel(replace(manifest, decision_threshold=threshold), runtime))
    one, batch = scorer.score_one(x), scorer.score(x)
    assert one is not None
    assert batch is not None
    assert one[1] is bool(batch.alarms[0]) is False


def test_a_classifier_alarms_on_low_confidence() -> None:
    manifest, _ = _manifest()
    classifier = replace(manifest, output=TensorSpec(shape=(-1, 3)), decision_threshold=None)
    scorer = Scorer(0.6)
    for output, alarm in (([[0.2, 0.7, 0.1]], False), ([[0.4, 0.35, 0.25]], True)):
        runtime = cast(CompiledModel, _FixedOutput(output))
        scorer.swap(LoadedModel(classifier, runtime))
        one, batch = scorer.score_one(_rows()[:1]), scorer.score(_rows()[:1])
        assert one is not None
        assert batch is not None
        assert one[0] == pytest.approx(max(output[0]))
        assert one[1] is alarm is bool(batch.alarms[0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_output_is_an_error_not_a_score(bad: float) -> None:
    manifest, _ = _manifest()
    scorer = Scorer(0.6)
    scorer.swap(LoadedModel(manifest, cast(CompiledModel, _FixedOutput([bad]))))
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        scorer.score_one(_rows()[:1])


def test_no_model_scores_nothing() -> None:
    assert Scorer(0.6).score_one(_rows()[:1]) is None


def test_predict_takes_any_rows_and_refuses_the_wrong_width() -> None:
    _, model = _manifest()
    runtime = CompiledModel(model)
    X = _rows()[:6]
    want = runtime.predict(X)
    # Each of these misses the fast path (type, order, rank or batch size) and must
    # give what the plain float32 rows give.
    assert np.array_equal(runtime.predict(X.astype(np.float64)), want)
    assert np.array_equal(runtime.predict(np.asfortranarray(X)), want)
    assert np.array_equal(runtime.predict(X.tolist()), want)
    assert np.array_equal(runtime.predict(X[0]), want[:1])
    assert np.array_equal(runtime.predict(X[:2]), want[:2])
    first = runtime.predict(X[:1])
    runtime.predict(X[1:2])
    assert np.array_equal(first, want[:1])  # an output is the caller's, not a view
    with pytest.raises(ValueError, match="rows of 8 features"):
        runtime.predict(np.zeros((1, 3), dtype=np.float32))
