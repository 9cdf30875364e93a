"""Models fed raw windows: trained on NumPy features, shipped with the features in the graph."""

from __future__ import annotations

import numpy as np
import pytest

import edgeloop.factory.run as run
from edgeloop.factory.data import Dataset
from edgeloop.factory.run import FEATURE_TOLERANCE, train_run
from edgeloop.factory.signal import SignalSection
from edgeloop.factory.signal_graph import features_tflite
from edgeloop.runtime import CompiledModel
from tests.factories import SIGNAL_WINDOW, as_dataset, signal_config, signal_windows


@pytest.fixture(scope="module")
def machine() -> tuple[np.ndarray, np.ndarray]:
    return signal_windows(1200, seed=1, outlier_share=0.03)


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_kmeans_on_raw_windows_ships_a_graph_that_takes_windows(
    machine: tuple[np.ndarray, np.ndarray], quantize: str
) -> None:
    X, modes = machine
    result = train_run(signal_config(quantize=quantize), as_dataset(X))
    assert result.promoted, result.decision.reason
    assert result.model is not None
    assert result.tflite is not None
    check = result.record["export"]["check"]
    assert check["ok"]
    assert check["features"]["ok"]
    assert check["features"]["max_relative_error"] <= FEATURE_TOLERANCE
    assert check["features"]["windows"] == check["rows"] > 100
    device = CompiledModel(result.tflite)
    assert device.n_features == SIGNAL_WINDOW * 3
    scores = device.predict(X).astype(np.float64)
    np.testing.assert_allclose(
        scores, result.model.outputs(X), rtol=run.EXPORT_TOLERANCE[quantize], atol=1e-3
    )
    # Knocks stand out from every operating mode.
    threshold = result.model.decision_threshold
    assert threshold is not None
    assert (scores[modes == -1] > threshold).mean() >= 0.9
    assert (scores[modes >= 0] > threshold).mean() <= 0.05
    # The device's health check feeds raw windows too.
    assert len(result.record["health_check"]["inputs"][0]) == SIGNAL_WINDOW * 3


@pytest.mark.parametrize("kind", ["mlp_classifier", "logistic_classifier"])
def test_classifiers_on_raw_windows(machine: tuple[np.ndarray, np.ndarray], kind: str) -> None:
    X, modes = machine
    keep = modes >= 0
    result = train_run(signal_config(kind), Dataset(X=X[keep], y=modes[keep], batches=()))
    assert result.promoted, result.decision.reason
    assert result.tflite is not None
    assert result.model is not None
    check = result.record["export"]["check"]
    assert check["ok"]
    assert check["features"]["ok"]
    assert check["max_error"] <= run.EXPORT_TOLERANCE["none"]
    assert result.record["metrics"]["accuracy"] >= 0.95
    predicted = CompiledModel(result.tflite).predict(X[keep][:50]).argmax(axis=1)
    assert (predicted == result.model.predict(X[keep][:50])).all()


def test_a_graph_whose_features_disagree_is_refused(
    machine: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    X, _ = machine
    config = signal_config()
    assert config.signal is not None
    # A front end that computes the bands of another sample rate: the same
    # number of features, each band's energy from the wrong bins.
    wrong = SignalSection.model_validate(
        {**config.signal.model_dump(), "sample_rate": 900.0, "features": config.signal.features}
    )
    monkeypatch.setattr(run, "features_tflite", lambda signal: features_tflite(wrong))
    result = train_run(config, as_dataset(X))
    assert not result.promoted
    assert "features disagree with NumPy's" in result.decision.reason
    assert "band_energy" in result.record["export"]["check"]["features"]["worst_feature"]
    assert not result.record["export"]["check"]["ok"]


def test_a_champion_with_another_pipeline_is_not_warm_started_from(
    machine: tuple[np.ndarray, np.ndarray],
) -> None:
    X, _ = machine
    first = train_run(signal_config(), as_dataset(X[:600]))
    assert first.model is not None
    doc_config = signal_config()
    assert doc_config.signal is not None
    other = doc_config.model_copy(
        update={"signal": doc_config.signal.model_copy(update={"hop": SIGNAL_WINDOW})}
    )
    second = train_run(other, as_dataset(X), champion=first.model)
    assert second.record["start"].startswith("cold start: the champion computes other features")
