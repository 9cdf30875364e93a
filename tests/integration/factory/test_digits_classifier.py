"""The seed's story on scikit-learn's real digits: 10% of the data, then 70%."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgeloop.factory.export import to_tflite
from edgeloop.factory.run import train_run
from edgeloop.factory.training import TrainedModel, split
from edgeloop.runtime import CompiledModel
from tests.factories import digits_config, digits_share

Rounds = tuple[dict[str, Any], dict[str, Any], TrainedModel]


@pytest.fixture(scope="module")
def rounds() -> Rounds:
    config = digits_config(threshold=0.93)
    first = train_run(config, digits_share(0.10))
    assert first.model is not None
    second = train_run(config, digits_share(0.70), champion=first.model)
    assert second.model is not None
    return first.record, second.record, second.model


def test_ten_percent_scores_clearly_below_seventy_percent(
    rounds: Rounds,
) -> None:
    first, second, _ = rounds
    assert second["metrics"]["accuracy"] - first["metrics"]["accuracy"] >= 0.03
    # Judged on the same held-out rows, the champion also trails the candidate.
    assert second["champion_metrics"]["accuracy"] < second["metrics"]["accuracy"]


def test_gate_refuses_ten_percent_and_promotes_seventy(
    rounds: Rounds,
) -> None:
    first, second, _ = rounds
    assert first["gate"]["decision"] == "refused"
    assert "below the threshold 0.9300" in first["gate"]["reason"]
    assert second["gate"]["decision"] == "promoted"
    assert "beats the champion's" in second["gate"]["reason"]
    # 70% is 7x the rows the 10% champion's scaler saw: the scaler is refit, cold.
    assert second["start"].startswith("cold start: ")
    assert "train.refit_scaler_growth = 4.0" in second["start"]


def test_every_run_records_its_data_metrics_and_decision(
    rounds: Rounds,
) -> None:
    first, second, _ = rounds
    for record in (first, second):
        assert record["data"]["rows"] > 0
        assert record["split"]["holdout_rows"] > 0
        assert set(record["gate"]) >= {"decision", "reason", "candidate", "champion", "threshold"}
        assert record["export"]["check"]["ok"] is True
        assert len(record["health_check"]["inputs"]) == 8


def test_float32_tflite_matches_scikit_learn_on_held_out_digits(
    rounds: Rounds,
) -> None:
    _, _, model = rounds
    X = split(digits_share(1.0), digits_config()).X_holdout
    got = CompiledModel(to_tflite(model, "none")).predict(X)
    want = model.outputs(X)
    assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))
    assert np.max(np.abs(got - want)) <= 1e-5


def test_int8_tflite_agrees_with_scikit_learn_on_held_out_digits(
    rounds: Rounds,
) -> None:
    _, _, model = rounds
    X = split(digits_share(1.0), digits_config()).X_holdout
    got = CompiledModel(to_tflite(model, "int8")).predict(X)
    agreement = np.mean(got.argmax(axis=1) == model.predict(X))
    assert agreement >= 0.995
    assert len(to_tflite(model, "int8")) < 0.5 * len(to_tflite(model, "none"))


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_logistic_regression_exports_too(quantize: str) -> None:
    config = digits_config("logistic_classifier", threshold=0.9, quantize=quantize)
    result = train_run(config, digits_share(0.7))
    assert result.promoted, result.record["gate"]["reason"]
    assert result.model is not None
    assert result.tflite is not None
    X = split(digits_share(1.0), config).X_holdout
    got = CompiledModel(result.tflite).predict(X)
    if quantize == "none":
        assert np.max(np.abs(got - result.model.outputs(X))) <= 1e-5
    assert np.mean(got.argmax(axis=1) == result.model.predict(X)) >= 0.995


@pytest.mark.parametrize("kind", ["mlp_classifier", "logistic_classifier"])
def test_binary_classifiers_export_as_two_probabilities(kind: str) -> None:
    data = digits_share(1.0)
    keep = np.isin(data.y, [3, 8])  # type: ignore[arg-type]
    from edgeloop.factory.config import parse_config
    from edgeloop.factory.data import Dataset

    binary = Dataset(X=data.X[keep], y=data.y[keep], batches=())  # type: ignore[index]
    config = parse_config(
        {
            "model": {"name": "three-or-eight", "kind": kind, "n_features": 64},
            "gate": {"metric": "f1_macro", "threshold": 0.8},
        }
    )
    result = train_run(config, binary)
    assert result.model is not None
    assert result.tflite is not None
    X = binary.X[:100]
    got = CompiledModel(result.tflite).predict(X)
    assert got.shape == (100, 2)
    assert (
        np.max(np.abs(got - result.model.estimator.predict_proba(result.model.scaled(X)))) <= 1e-5
    )


def test_export_is_deterministic(rounds: Rounds) -> None:
    import pickle

    _, _, model = rounds
    for quantize in ("none", "int8"):
        first = to_tflite(model, quantize)
        assert to_tflite(model, quantize) == first
        assert to_tflite(pickle.loads(pickle.dumps(model)), quantize) == first


def test_declared_classes_missing_from_the_data_get_probability_zero() -> None:
    data = digits_share(0.7)
    assert data.y is not None
    keep = data.y != 9
    from edgeloop.factory.data import Dataset

    without_nines = Dataset(X=data.X[keep], y=data.y[keep], batches=())
    result = train_run(digits_config(threshold=0.5), without_nines)
    assert result.tflite is not None
    got = CompiledModel(result.tflite).predict(without_nines.X[:50])
    assert got.shape == (50, 10)
    assert np.all(got[:, 9] == 0.0)
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_warm_starts_keep_the_scaler_until_the_data_outgrows_it() -> None:
    config = digits_config(threshold=0.5)
    first = train_run(config, digits_share(0.3))
    assert first.model is not None
    grown = train_run(config, digits_share(0.5), champion=first.model)
    assert grown.record["start"] == "warm start from the champion"
    assert grown.model is not None
    assert np.array_equal(grown.model.mean, first.model.mean)
    assert grown.model.scaler_rows == first.model.scaler_rows
    assert grown.record["metrics"]["accuracy"] >= 0.9
