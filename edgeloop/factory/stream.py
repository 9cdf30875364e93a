"""k-means on more rows than a Lambda holds: trained chunk by chunk from storage.

`fit_kmeans_streaming` makes passes over a chunk source (a callable that reads
the data again from the start, e.g. batch objects in S3 or files on disk), so
memory is one chunk plus fixed-size samples, whatever the row count:

1. statistics: row count and running sums for the scaler (or the champion's
   scaler, under the same growth rule as in-memory training), and reservoir
   samples of training and held-out rows; the held-out split is the same keyed
   row hash as `training.split`;
2. `epochs` passes of mini-batch k-means (`partial_fit` on `batch_size` rows at
   a time), started from the champion's centroids when warm, else from k-means
   on the training sample;
3. the alarm threshold and score statistics from the training sample, and the
   silhouette on the held-out sample.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.cluster import KMeans, MiniBatchKMeans

from edgeloop.factory.config import KMeansParams, ModelConfig
from edgeloop.factory.training import (
    NotEnoughData,
    TrainedModel,
    holdout_mask,
    recalibrate,
    silhouette,
)

FloatArray = npt.NDArray[np.float64]
ChunkSource = Callable[[], Iterator[npt.NDArray[np.floating[Any]]]]
CALIBRATION_SAMPLE = 50_000


def trains_streamed(config: ModelConfig, wire_bytes: int, stream_above_bytes: int) -> bool:
    """Whether a run trains chunk by chunk: k-means whose uploads, as stored, exceed the
    threshold. The retrain function, the training job and the hand-off estimate all ask
    this, so they agree on which runs stream. Models fed raw windows (a signal
    section) train in memory: the streaming fit does not compute features yet."""
    return (
        config.model.kind == "kmeans_anomaly"
        and config.signal is None
        and wire_bytes > stream_above_bytes
    )


class _Reservoir:
    """A uniform sample of fixed size from a stream (Algorithm R, vectorised per chunk)."""

    def __init__(self, size: int, width: int, rng: np.random.Generator) -> None:
        self.rows = np.empty((size, width))
        self.size, self.rng, self.seen = size, rng, 0

    def add(self, chunk: FloatArray) -> None:
        fill = min(len(chunk), max(0, self.size - self.seen))
        self.rows[self.seen : self.seen + fill] = chunk[:fill]
        rest = chunk[fill:]
        if len(rest):
            # Row t of the stream replaces a random slot with probability size / (t + 1).
            t = self.seen + fill + np.arange(len(rest))
            slots = self.rng.integers(0, t + 1)
            keep = slots < self.size
            self.rows[slots[keep]] = rest[keep]
        self.seen += len(chunk)

    def array(self) -> FloatArray:
        return self.rows[: min(self.seen, self.size)]


@dataclass(frozen=True)
class StreamedRun:
    model: TrainedModel
    metrics: dict[str, float]
    rows: int
    train_rows: int
    passes: int
    note: str
    # A uniform sample of the held-out rows: what the metrics and export check use.
    holdout_sample: FloatArray


def _checked(chunk: Any, width: int) -> FloatArray:
    X = np.asarray(chunk, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != width:
        raise ValueError(f"a chunk has shape {X.shape}; this model takes rows of {width}")
    return X[np.isfinite(X).all(axis=1)]


def fit_kmeans_streaming(
    config: ModelConfig,
    chunks: ChunkSource,
    champion: TrainedModel | None = None,
    epochs: int = 2,
) -> StreamedRun:
    params = config.estimator_params()
    if not isinstance(params, KMeansParams):
        raise ValueError(f"streaming training is for kmeans_anomaly, not {config.model.kind}")
    if config.signal is not None:
        raise ValueError("streaming training does not compute signal features; train in memory")
    width, seed, share = config.model.n_features, config.train.seed, config.train.holdout
    rng = np.random.default_rng(seed)
    train_sample = _Reservoir(CALIBRATION_SAMPLE, width, rng)
    holdout_sample = _Reservoir(params.silhouette_sample, width, rng)
    count, total, squares = 0, np.zeros(width), np.zeros(width)
    rows = 0
    for raw in chunks():
        X = _checked(raw, width)
        mask = holdout_mask(X, None, seed, share)
        rows += len(X)
        train = X[~mask]
        count += len(train)
        total += train.sum(axis=0)
        squares += (train**2).sum(axis=0)
        train_sample.add(train)
        holdout_sample.add(X[mask])
    if count < max(config.gate.min_rows, params.n_clusters):
        raise NotEnoughData(f"{count} training rows; gate.min_rows is {config.gate.min_rows}")
    growth = config.train.refit_scaler_growth
    warm = champion if config.train.warm_start else None
    if warm is not None and (
        warm.kind != "kmeans_anomaly"
        or warm.n_features != width
        or warm.estimator.n_clusters != params.n_clusters
        or (growth and count >= growth * max(1, warm.scaler_rows))
    ):
        warm = None
    if warm is not None:
        mean, scale, scaler_rows = warm.mean, warm.scale, warm.scaler_rows
        init = warm.estimator.cluster_centers_
        note = "warm start from the champion (streamed)"
    else:
        mean = total / count
        scale = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
        scale[scale < 1e-12] = 1.0
        scaler_rows = count
        seeded = KMeans(params.n_clusters, n_init=params.n_init, random_state=seed)
        init = seeded.fit((train_sample.array() - mean) / scale).cluster_centers_
        note = "cold start (streamed): centroids seeded by k-means on a sample"
    km = MiniBatchKMeans(
        n_clusters=params.n_clusters,
        init=init,
        n_init=1,
        batch_size=params.batch_size,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(epochs):
            for raw in chunks():
                X = _checked(raw, width)
                train = (X[~holdout_mask(X, None, seed, share)] - mean) / scale
                for start in range(0, len(train), params.batch_size):
                    km.partial_fit(train[start : start + params.batch_size])
    model = TrainedModel(
        kind="kmeans_anomaly",
        n_features=width,
        mean=mean,
        scale=scale,
        estimator=km,
        scaler_rows=scaler_rows,
    )
    recalibrate(model, train_sample.array(), config)
    held = holdout_sample.array().copy()
    metrics: dict[str, float] = {"holdout_rows": float(holdout_sample.seen)}
    if len(held) > params.n_clusters:
        metrics["silhouette"] = silhouette(model, held, seed)
    return StreamedRun(model, metrics, rows, count, 1 + epochs, note, held)
