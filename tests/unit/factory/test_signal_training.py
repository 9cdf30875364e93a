"""Models fed raw windows: trained on NumPy features, shipped with the features in the graph."""

from __future__ import annotations

import io

import numpy as np
import pytest

import edgeloop.factory.export as export
import edgeloop.factory.run as run
from edgeloop.factory.config import ModelConfig
from edgeloop.factory.data import Batch, Dataset, assemble, read_batch
from edgeloop.factory.run import FEATURE_TOLERANCE, train_run
from edgeloop.factory.screening import screen
from edgeloop.factory.signal import SignalSection
from edgeloop.factory.signal_graph import FEATURES_TENSOR, features_tflite, signal_features
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
    # features by name and number, each band's energy from the wrong bins.
    wrong = SignalSection.model_validate(
        {**config.signal.model_dump(), "sample_rate": 900.0, "features": config.signal.features}
    )
    monkeypatch.setattr(
        export, "signal_features", lambda graph, signal, x: signal_features(graph, wrong, x)
    )
    result = train_run(config, as_dataset(X))
    assert not result.promoted
    assert "features disagree with NumPy's" in result.decision.reason
    check = result.record["export"]["check"]
    assert "band_energy" in check["features"]["worst_feature"]
    assert check["features"]["max_relative_error"] > 0.01
    assert not check["ok"]


def test_the_check_reads_the_features_out_of_the_shipped_bytes(
    machine: tuple[np.ndarray, np.ndarray],
) -> None:
    X, _ = machine
    config = signal_config()
    assert config.signal is not None
    result = train_run(config, as_dataset(X))
    assert result.tflite is not None
    device = CompiledModel(result.tflite, inspect=True)
    device.predict(X[:10])
    inside = device.tensor(FEATURES_TENSOR)
    alone = CompiledModel(features_tflite(config.signal)).predict(X[:10])
    np.testing.assert_allclose(inside, alone, rtol=1e-6, atol=1e-9)
    verdict = run.features_agree(config.signal, X, result.tflite)
    assert verdict["ok"]
    assert verdict["windows"] == len(X)


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


def _upload(config: ModelConfig, device: str, X: np.ndarray, y: np.ndarray) -> Batch:
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y)
    item = read_batch(f"data/{config.model.name}/{device}/0001.npz", buffer.getvalue(), config)
    assert isinstance(item, Batch), item
    return item


def test_uploads_of_raw_windows_are_read_and_screened_on_their_features(
    machine: tuple[np.ndarray, np.ndarray],
) -> None:
    X, modes = machine
    keep = modes >= 0
    X, modes = X[keep], modes[keep]
    config = signal_config("logistic_classifier")
    items = []
    for d in range(6):
        rows = slice(d * 150, (d + 1) * 150)
        # pump-02 mislabels every window as the next mode.
        labels = (modes[rows] + (1 if d == 2 else 0)) % 4
        items.append(_upload(config, f"pump-{d:02d}", X[rows], labels))
    dataset = assemble(items, config)
    assert dataset.X.shape[1] == SIGNAL_WINDOW * 3
    result = screen(dataset, config)
    assert [a.device for a in result.screened] == ["pump-02"]
    # A batch of feature vectors instead of windows is set aside with why.
    buffer = io.BytesIO()
    np.savez(buffer, X=np.zeros((5, config.model.n_features)), y=np.zeros(5, dtype=np.int64))
    wrong = read_batch("data/pump/pump-09/0001.npz", buffer.getvalue(), config)
    assert not isinstance(wrong, Batch)
    assert f"the model takes {SIGNAL_WINDOW * 3}" in wrong.detail


def test_the_health_check_tolerance_scales_with_a_signal_models_outputs(
    machine: tuple[np.ndarray, np.ndarray],
) -> None:
    X, _ = machine
    result = train_run(signal_config(), as_dataset(X))
    health = result.record["health_check"]
    largest = float(np.max(np.abs(health["expected"])))
    assert health["tolerance"] == pytest.approx(run.HEALTH_TOLERANCE * max(1.0, largest))
    assert health["tolerance"] >= run.HEALTH_TOLERANCE
