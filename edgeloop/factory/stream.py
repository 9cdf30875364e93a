"""Models trained on more rows than memory holds: chunk by chunk from storage.

Which kinds stream (`streaming_refusal` says why one cannot): k-means,
logistic regression and the MLP, each fed features directly. A model fed raw
windows (a [signal] section) trains in memory: the streaming fits do not
compute signal features.

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

`fit_classifier_streaming` does the same for the classifiers (see its docstring):
a statistics pass for the scaler and the held-out sample, then passes of
`partial_fit`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from edgeloop.factory.config import KMeansParams, LogisticParams, MLPParams, ModelConfig
from edgeloop.factory.data import Batch
from edgeloop.factory.training import (
    NotEnoughData,
    TrainedModel,
    holdout_mask,
    recalibrate,
    silhouette,
)

FloatArray = npt.NDArray[np.float64]
LabelArray = npt.NDArray[np.int64]
ChunkSource = Callable[[], Iterator[npt.NDArray[np.floating[Any]]]]
# Classifiers read rows with their labels.
LabelledChunkSource = Callable[[], Iterator[tuple[npt.NDArray[np.floating[Any]], LabelArray]]]
CALIBRATION_SAMPLE = 50_000
STREAMING_KINDS = ("kmeans_anomaly", "logistic_classifier", "mlp_classifier")
# Held-out rows a streamed classifier is judged on (gate, champion, export check):
# a uniform sample, so the accuracy's standard error stays below 0.2 points.
CLASSIFIER_HOLDOUT_SAMPLE = 100_000
# Rows per optimiser step. Larger than MLPClassifier's in-memory 200: at ten
# million rows the per-step Python overhead, not the arithmetic, sets the time.
STREAM_BATCH = 1000
# Passes over the data: at least two, and enough for this many optimiser steps
# on small data, at most MAX_EPOCHS.
MIN_UPDATES = 2000
MAX_EPOCHS = 50
# Adam's step for streamed logistic regression: its convex loss takes a larger
# step than an MLP's default 1e-3 without diverging on standardised features.
LOGISTIC_LEARNING_RATE = 1e-2


class CannotStream(ValueError):
    """A run too large to train in memory, of a model that cannot train chunk by chunk."""


def streaming_refusal(config: ModelConfig) -> str | None:
    """Why this model cannot train chunk by chunk, or None when it can."""
    if config.signal is not None:
        return (
            f"{config.model.name} is fed raw windows ([signal] section) and the streaming fits "
            "do not compute signal features: it trains in memory"
        )
    if config.model.kind not in STREAMING_KINDS:
        return f"{config.model.kind} has no chunk-by-chunk fit: it trains in memory"
    return None


def stream_chunk(batch: Batch) -> Any:
    """What a chunk source yields for one upload: its rows, with its labels when it has them."""
    return batch.X if batch.y is None else (batch.X, batch.y)


def trains_streamed(config: ModelConfig, wire_bytes: int, stream_above_bytes: int) -> bool:
    """Whether a run trains chunk by chunk: a model that can (`streaming_refusal`) whose
    uploads, as stored, exceed the threshold. The retrain function, the training job and
    the hand-off estimate all ask this, so they agree on which runs stream."""
    return streaming_refusal(config) is None and wire_bytes > stream_above_bytes


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


@dataclass(frozen=True)
class StreamedClassifierRun:
    model: TrainedModel
    rows: int
    train_rows: int
    passes: int
    note: str
    # A uniform sample of the held-out rows and their labels: what the gate,
    # the champion's figures and the export check use.
    held_rows: FloatArray
    held_labels: LabelArray
    holdout_rows: int


class _Moments:
    """Per-feature mean and variance over a stream, merged chunk by chunk (Chan et al.),
    which stays exact where a running sum of squares cancels on large offsets."""

    def __init__(self, width: int) -> None:
        self.count, self.mean, self.m2 = 0, np.zeros(width), np.zeros(width)

    def add(self, X: FloatArray) -> None:
        n = len(X)
        if not n:
            return
        mean = X.mean(axis=0)
        m2 = ((X - mean) ** 2).sum(axis=0)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * n / total
        self.count = total

    def scale(self) -> FloatArray:
        scale: FloatArray = np.sqrt(self.m2 / max(1, self.count))
        scale[scale < 1e-12] = 1.0
        return scale


def _labelled(chunk: Any, width: int) -> tuple[FloatArray, LabelArray]:
    X_raw, y_raw = chunk
    X = np.asarray(X_raw, dtype=np.float64)
    y = np.asarray(y_raw, dtype=np.int64).reshape(-1)
    if X.ndim != 2 or X.shape[1] != width:
        raise ValueError(f"a chunk has shape {X.shape}; this model takes rows of {width}")
    if len(y) != len(X):
        raise ValueError(f"a chunk has {len(X)} rows and {len(y)} labels")
    finite = np.isfinite(X).all(axis=1)
    return X[finite], y[finite]


def epochs_for(train_rows: int) -> int:
    """Passes of partial_fit over `train_rows`: two on big data, more on small."""
    steps_per_epoch = max(1, -(-train_rows // STREAM_BATCH))
    return int(min(MAX_EPOCHS, max(2, -(-MIN_UPDATES // steps_per_epoch))))


def _streaming_estimator(
    config: ModelConfig, params: MLPParams | LogisticParams, train_rows: int
) -> MLPClassifier:
    seed = config.train.seed
    if isinstance(params, MLPParams):
        return MLPClassifier(
            hidden_layer_sizes=params.hidden_layer_sizes,
            alpha=params.alpha,
            learning_rate_init=params.learning_rate_init,
            batch_size=STREAM_BATCH,
            random_state=seed,
        )
    # Multinomial logistic regression is a network without hidden layers: a
    # softmax (a sigmoid for two classes) over one linear layer, the same model
    # and loss as LogisticRegression, fitted by mini-batch Adam. Its L2 penalty
    # per step is alpha / batch x |W|^2 / 2; LogisticRegression's per row is
    # |W|^2 / (2 C n), so alpha = batch / (C n) minimises the same objective.
    # (SGDClassifier(loss="log_loss") fits one-vs-rest: its predict_proba is not
    # the softmax the exported graph computes.)
    return MLPClassifier(
        hidden_layer_sizes=(),
        alpha=STREAM_BATCH / (params.C * max(1, train_rows)),
        learning_rate_init=LOGISTIC_LEARNING_RATE,
        batch_size=STREAM_BATCH,
        random_state=seed,
    )


def _as_logistic(net: MLPClassifier, params: LogisticParams, width: int) -> LogisticRegression:
    """The fitted softmax layer as the LogisticRegression an in-memory fit produces, so
    export, scoring and a later in-memory warm start read it the same way."""
    model = LogisticRegression(C=params.C, max_iter=params.max_iter)
    model.coef_ = np.ascontiguousarray(net.coefs_[0].T)
    model.intercept_ = np.asarray(net.intercepts_[0], dtype=np.float64).copy()
    model.classes_ = np.asarray(net.classes_)
    model.n_features_in_ = width
    model.n_iter_ = np.asarray([net.n_iter_])
    return model


def fit_classifier_streaming(
    config: ModelConfig, chunks: LabelledChunkSource, epochs: int | None = None
) -> StreamedClassifierRun:
    """A classifier fitted chunk by chunk, memory one chunk plus a fixed-size sample:

    1. statistics: rows, the classes, the scaler's mean and variance over every
       training row (merged per chunk: the uploads arrive device by device, so
       the first chunks are no fair sample of the scale), and a reservoir sample
       of held-out rows; the held-out split is `training.split`'s row hash, so a
       row is on the same side in every pass and every run;
    2. passes of `partial_fit` over the standardised training rows of each chunk
       (`epochs_for` passes unless given), in mini-batches, shuffled within each chunk.

    Starts cold: a streamed run is one the data outgrew, and the scaler refit
    rule (train.refit_scaler_growth) would start most of them cold anyway.
    """
    params = config.estimator_params()
    if not isinstance(params, (MLPParams, LogisticParams)):
        raise ValueError(f"streamed classifier training is not for {config.model.kind}")
    refusal = streaming_refusal(config)
    if refusal is not None:
        raise CannotStream(refusal)
    width, seed, share = config.model.n_features, config.train.seed, config.train.holdout
    rng = np.random.default_rng(seed)
    holdout = _Reservoir(CLASSIFIER_HOLDOUT_SAMPLE, width + 1, rng)
    moments = _Moments(width)
    seen: set[int] = set()
    rows = 0
    for raw in chunks():
        X, y = _labelled(raw, width)
        mask = holdout_mask(X, y, seed, share)
        rows += len(X)
        moments.add(X[~mask])
        seen.update(int(c) for c in np.unique(y[~mask]))
        holdout.add(np.column_stack([X[mask], y[mask]]))
    count = moments.count
    if count < config.gate.min_rows:
        raise NotEnoughData(f"{count} training rows; gate.min_rows is {config.gate.min_rows}")
    classes = config.model.classes or tuple(sorted(seen))
    if len(classes) < 2:
        raise NotEnoughData(f"training labels hold {len(classes)} class; a classifier needs two")
    mean, scale = moments.mean, moments.scale()
    net = _streaming_estimator(config, params, count)
    passes = epochs if epochs is not None else epochs_for(count)
    order = np.asarray(classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(passes):
            for raw in chunks():
                X, y = _labelled(raw, width)
                train = ~holdout_mask(X, y, seed, share)
                if not train.any():
                    continue
                shuffle = rng.permutation(int(train.sum()))
                Xs = ((X[train] - mean) / scale)[shuffle]
                # A chunk smaller than a batch is one batch (scikit-learn warns otherwise).
                net.set_params(batch_size=min(STREAM_BATCH, len(Xs)))
                net.partial_fit(Xs, y[train][shuffle], classes=order)
    estimator: Any = net if isinstance(params, MLPParams) else _as_logistic(net, params, width)
    model = TrainedModel(
        kind=config.model.kind,
        n_features=width,
        mean=mean,
        scale=scale,
        estimator=estimator,
        classes=tuple(int(c) for c in classes),
        scaler_rows=count,
    )
    held = holdout.array()
    return StreamedClassifierRun(
        model=model,
        rows=rows,
        train_rows=count,
        passes=1 + passes,
        note=f"cold start (streamed): scaler from every training row, {passes} passes of "
        "partial_fit",
        held_rows=np.ascontiguousarray(held[:, :width]),
        held_labels=held[:, width].astype(np.int64),
        holdout_rows=holdout.seen,
    )
