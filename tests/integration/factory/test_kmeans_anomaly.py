"""The k-means anomaly detector: scores in TFLite, silhouette gate, warm starts."""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.factory.run import train_run
from edgeloop.runtime import CompiledModel
from tests.factories import as_dataset, kmeans_config, planted_outliers


@pytest.mark.parametrize(("quantize", "tolerance"), [("none", 1e-5), ("int8", 2e-2)])
def test_tflite_scores_match_scikit_learn_distances(quantize: str, tolerance: float) -> None:
    X, _ = planted_outliers(3000, seed=1)
    result = train_run(kmeans_config(quantize=quantize), as_dataset(X))
    assert result.model is not None
    assert result.tflite is not None
    probe, _ = planted_outliers(500, seed=2)
    got = CompiledModel(result.tflite).predict(probe)
    want = result.model.estimator.transform(result.model.scaled(probe)).min(axis=1)
    assert got.shape == (500,)
    assert np.max(np.abs(got - want) / np.maximum(want, 1.0)) <= tolerance


def test_silhouette_gate_refuses_too_few_points_and_promotes_enough() -> None:
    """Silhouette on ten held-out points clears 0.5 about as often as not; the
    gate does not promote on that."""
    config = kmeans_config(threshold=0.5)
    few, _ = planted_outliers(60, seed=3)
    many, _ = planted_outliers(3000, seed=3)
    refused = train_run(config, as_dataset(few))
    promoted = train_run(config, as_dataset(many))
    assert refused.record["gate"]["decision"] == "refused"
    reason = refused.record["gate"]["reason"]
    assert "silhouette" in reason
    assert "gate.min_holdout_rows is 20" in reason
    assert promoted.record["gate"]["decision"] == "promoted", promoted.record["gate"]["reason"]


def test_too_few_rows_to_fit_is_a_refusal_with_a_reason() -> None:
    few, _ = planted_outliers(8, seed=4)
    result = train_run(kmeans_config(), as_dataset(few))
    assert not result.promoted
    assert result.tflite is None
    assert "not enough data to train" in result.record["gate"]["reason"]


def test_threshold_is_calibrated_and_flags_the_planted_outliers() -> None:
    # Training data contaminated less than 1 - score_quantile, as the config assumes.
    X, _ = planted_outliers(4000, seed=5, outlier_share=0.005)
    result = train_run(kmeans_config(), as_dataset(X))
    assert result.model is not None
    threshold = result.model.decision_threshold
    assert threshold is not None
    assert result.record["decision_threshold"] == threshold
    assert 0.005 <= result.model.stats["alarm_rate"] <= 0.015
    probe, truth = planted_outliers(2000, seed=6)
    flagged = result.model.outputs(probe) > threshold
    recall = flagged[truth].mean()
    false_alarms = flagged[~truth].mean()
    assert recall >= 0.9
    assert false_alarms <= 0.02


def test_warm_start_keeps_centroid_order() -> None:
    config = kmeans_config()
    first, _ = planted_outliers(2000, seed=7)
    more, _ = planted_outliers(4000, seed=8)
    champion = train_run(config, as_dataset(first)).model
    assert champion is not None
    successor = train_run(config, as_dataset(np.vstack([first, more])), champion)
    assert successor.record["start"] == "warm start from the champion"
    assert successor.model is not None
    old = champion.estimator.cluster_centers_
    new = successor.model.estimator.cluster_centers_
    distances = np.linalg.norm(old[:, None, :] - new[None, :, :], axis=2)
    # Centroid i of the successor is the nearest one to centroid i of the champion.
    assert list(distances.argmin(axis=1)) == list(range(len(old)))
    assert np.max(np.diag(distances)) < 0.5


def test_a_robust_threshold_ignores_anomalies_in_the_training_data() -> None:
    """With 3% anomalies in training, a 0.99 quantile lands among them; median + k*MAD does not."""
    from edgeloop.factory.config import parse_config

    X, _ = planted_outliers(4000, seed=21, outlier_share=0.03)
    doc = {
        "model": {"name": "vibration", "kind": "kmeans_anomaly", "n_features": 8},
        "train": {"params": {"n_clusters": 4}},
        "gate": {"metric": "silhouette", "threshold": 0.3},
    }
    quantile = train_run(parse_config(doc), as_dataset(X)).model
    doc["train"] = {"params": {"n_clusters": 4, "threshold_method": "mad", "mad_k": 5.0}}
    robust = train_run(parse_config(doc), as_dataset(X)).model
    assert quantile is not None
    assert robust is not None
    probe, truth = planted_outliers(3000, seed=22, outlier_share=0.03)
    recalls = {}
    for name, model in (("quantile", quantile), ("mad", robust)):
        assert model.decision_threshold is not None
        flagged = model.outputs(probe) > model.decision_threshold
        recalls[name] = flagged[truth].mean()
        if name == "mad":
            assert flagged[~truth].mean() <= 0.01
    assert recalls["mad"] >= 0.95
    assert recalls["mad"] > recalls["quantile"] + 0.1
