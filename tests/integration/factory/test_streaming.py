"""k-means trained chunk by chunk from storage, for data larger than memory."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from edgeloop.factory.run import train_run
from edgeloop.factory.stream import fit_kmeans_streaming
from edgeloop.factory.training import NotEnoughData
from tests.factories import as_dataset, digits_config, kmeans_config, planted_outliers


def _chunks(X: np.ndarray, size: int, reads: list[int]) -> object:
    def source() -> Iterator[np.ndarray]:
        reads.append(1)
        for start in range(0, len(X), size):
            yield X[start : start + size].astype(np.float32)

    return source


def test_streamed_kmeans_finds_the_modes_and_flags_the_outliers() -> None:
    X, outlier = planted_outliers(20_000, seed=11)
    reads: list[int] = []
    run = fit_kmeans_streaming(kmeans_config(), _chunks(X, 3000, reads))  # type: ignore[arg-type]
    assert run.rows == 20_000
    assert len(reads) == run.passes == 3  # statistics, then two epochs
    centers = np.random.default_rng(42).normal(0.0, 8.0, size=(4, 8))
    found = run.model.estimator.cluster_centers_ * run.model.scale + run.model.mean
    # Within a third of a mode's spread (sd 1 in each of 8 features; the outliers pull a little).
    assert all(np.min(np.linalg.norm(found - c, axis=1)) < 1.0 for c in centers)
    # The same data in memory gives the same quality: silhouette, and which rows alarm.
    in_memory = train_run(kmeans_config(), as_dataset(X))
    assert in_memory.model is not None
    assert run.metrics["silhouette"] == pytest.approx(
        in_memory.record["metrics"]["silhouette"], abs=0.05
    )
    assert run.model.decision_threshold is not None
    assert in_memory.model.decision_threshold is not None
    streamed = run.model.outputs(X) > run.model.decision_threshold
    loaded = in_memory.model.outputs(X) > in_memory.model.decision_threshold
    assert np.mean(streamed == loaded) > 0.99
    assert np.mean(streamed[outlier]) == pytest.approx(np.mean(loaded[outlier]), abs=0.05)


def test_a_streamed_warm_start_keeps_the_champions_centroid_order() -> None:
    X, _ = planted_outliers(12_000, seed=12)
    first = fit_kmeans_streaming(kmeans_config(), _chunks(X[:6000], 2000, []))  # type: ignore[arg-type]
    second = fit_kmeans_streaming(
        kmeans_config(),
        _chunks(X, 2000, []),  # type: ignore[arg-type]
        champion=first.model,
    )
    assert second.note.startswith("warm start")
    before = first.model.estimator.cluster_centers_
    after = second.model.estimator.cluster_centers_
    assert np.all(np.linalg.norm(after - before, axis=1) < 0.2)


def test_streaming_refuses_what_it_cannot_train() -> None:
    X, _ = planted_outliers(40, seed=13)
    with pytest.raises(NotEnoughData):
        fit_kmeans_streaming(kmeans_config(), _chunks(X[:5], 5, []))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rows of 8"):
        fit_kmeans_streaming(kmeans_config(), _chunks(X[:, :5], 10, []))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="for kmeans_anomaly"):
        fit_kmeans_streaming(digits_config(), _chunks(X, 10, []))  # type: ignore[arg-type]
