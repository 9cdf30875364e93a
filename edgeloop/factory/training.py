"""Training and evaluation of the three model kinds, with warm starts.

Features are standardised with a scaler learned on the first (cold) training
and then kept: a warm-started model lives in the same feature space as its
champion, so its weights move little and patches stay small. The scaler is
part of the exported graph, so devices feed raw features.
"""

from __future__ import annotations

import copy
import hashlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, silhouette_score
from sklearn.neural_network import MLPClassifier

from edgeloop.factory.config import KMeansParams, LogisticParams, MLPParams, ModelConfig
from edgeloop.factory.data import Dataset
from edgeloop.factory.signal import SignalSection, extract

FloatArray = npt.NDArray[np.float64]


class NotEnoughData(ValueError):
    """Too few good rows to fit this model at all."""


@dataclass
class TrainedModel:
    """A fitted model with everything export and scoring need. Saved with joblib."""

    kind: str
    n_features: int
    mean: FloatArray
    scale: FloatArray
    estimator: Any
    classes: tuple[int, ...] = ()
    decision_threshold: float | None = None
    stats: dict[str, float] = field(default_factory=dict)
    # Training rows the scaler was fit on; warm starts keep the scaler until the
    # data outgrows it (train.refit_scaler_growth).
    scaler_rows: int = 0
    # The int8 scales of the model this one was warm-started from, by weight
    # name: export reuses each one the new weights still fit (see quantize_int8).
    int8_base: dict[str, tuple[float, ...]] = field(default_factory=dict)
    # The health check's inputs this model shipped with: its successors reuse them,
    # so a device fetches golden inputs once (edgeloop.contract.trust_targets).
    golden: FloatArray | None = None
    # Set when the model takes raw windows: its features are computed from each
    # window, by NumPy here and by the graph's first ops on the device.
    signal: SignalSection | None = None

    @property
    def input_width(self) -> int:
        return self.signal.width if self.signal is not None else self.n_features

    def features(self, X: FloatArray) -> FloatArray:
        """The estimator's features of input rows: the rows, or the features of raw windows."""
        if self.signal is None:
            return np.asarray(X, dtype=np.float64)
        return extract(self.signal, X)

    def scaled(self, X: FloatArray) -> FloatArray:
        out: FloatArray = (self.features(X) - self.mean) / self.scale
        return out

    def outputs(self, X: FloatArray) -> FloatArray:
        """What the exported graph computes: anomaly score, or class probabilities."""
        Xs = self.scaled(X)
        if self.kind == "kmeans_anomaly":
            out: FloatArray = self.estimator.transform(Xs).min(axis=1)
            return out
        proba = self.estimator.predict_proba(Xs)
        # Lay probabilities out in the declared class order, zeros for classes the
        # estimator has not seen.
        full = np.zeros((Xs.shape[0], len(self.classes)))
        for j, cls in enumerate(self.estimator.classes_):
            full[:, self.classes.index(int(cls))] = proba[:, j]
        return full

    def predict(self, X: FloatArray) -> npt.NDArray[np.int64]:
        classes = np.asarray(self.classes, dtype=np.int64)
        out: npt.NDArray[np.int64] = classes[self.outputs(X).argmax(axis=1)]
        return out


@dataclass(frozen=True)
class Split:
    X_train: FloatArray
    y_train: npt.NDArray[np.int64] | None
    X_holdout: FloatArray
    y_holdout: npt.NDArray[np.int64] | None
    by: str = "row"  # "device": whole devices held out; "row": a hash of each row
    holdout_devices: tuple[str, ...] = ()


_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def _mix(h: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finalizer: every input bit moves about half the output bits."""
    h = (h ^ (h >> np.uint64(30))) * _MIX_1
    h = (h ^ (h >> np.uint64(27))) * _MIX_2
    out: npt.NDArray[np.uint64] = h ^ (h >> np.uint64(31))
    return out


def holdout_mask(
    X: FloatArray, y: npt.NDArray[np.int64] | None, seed: int, share: float
) -> npt.NDArray[np.bool_]:
    """Which rows are held out, decided by a seeded hash of each row's bytes.

    A row lands on the same side in every run, so as data accumulates the
    champion is never judged on rows it was trained on. The hash is vectorised
    (a splitmix64 chain over the row's 8-byte words and label), so the
    streaming trainer can split millions of rows chunk by chunk.
    """
    rows = np.ascontiguousarray(X, dtype=np.float64).view(np.uint64)
    labels = (
        np.asarray(y, dtype=np.int64).view(np.uint64)
        if y is not None
        else np.zeros(len(rows), dtype=np.uint64)
    )
    with np.errstate(over="ignore"):
        h = np.full(len(rows), _mix(np.array([seed], dtype=np.uint64))[0], dtype=np.uint64)
        for column in range(rows.shape[1] if rows.ndim == 2 else 0):
            h = _mix(h ^ rows[:, column])
        h = _mix(h ^ labels)
    # The top 53 bits as a fraction in [0, 1), compared with the share.
    fraction = (h >> np.uint64(11)).astype(np.float64) / float(2**53)
    mask: npt.NDArray[np.bool_] = fraction < share
    return mask


def device_rank(device: str, seed: int) -> float:
    """Where a device falls in [0, 1) under a keyed hash: its place in the held-out order."""
    digest = hashlib.blake2b(
        device.encode(), digest_size=8, key=seed.to_bytes(8, "big"), person=b"edgeloop-holdout"
    ).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def holdout_devices(counts: dict[str, int], seed: int, share: float) -> tuple[str, ...]:
    """The devices whose rows are held out: about `share` of the rows, at least one device.

    Devices are taken in the order of a keyed hash of their names until the
    held-out rows come closest to `share`, and never all of them. A device
    keeps its place in that order as data accumulates; only the device at the
    boundary can change sides. If it moves from training to held out, the
    champion is judged on rows it trained on, which flatters the champion: the
    gate errs towards refusing, never towards shipping.
    """
    total = sum(counts.values())
    target = share * total
    order = sorted(counts, key=lambda d: (device_rank(d, seed), d))
    held: list[str] = []
    rows = 0
    for device in order[:-1]:  # at least one device trains
        if held and abs(rows + counts[device] - target) >= abs(rows - target):
            break
        held.append(device)
        rows += counts[device]
    return tuple(held)


def split(dataset: Dataset, config: ModelConfig) -> Split:
    """Training and held-out rows: whole devices held out when there are enough devices.

    One device's rows then never both train and judge a candidate, so a
    device cannot grade its own poisoned upload. Enough means at least
    1/holdout devices (5 at the default 0.2), so that one device fits in the
    held-out share: holding out one of three devices would leave a third of the
    data, and that device's operating conditions, out of training (the anomaly
    demo's k-means then alarmed on everything the held-out device saw and was
    rolled back). With fewer devices, no device information, or a single
    device (the CLI), the stable row-hash split applies.
    """
    y = dataset.y
    seed, share = config.train.seed, config.train.holdout
    names, row_device = dataset.device_names, dataset.row_device
    held: tuple[str, ...] = ()
    if row_device is not None and len(names) >= max(2, math.ceil(1 / share - 1e-9)):
        counts = {name: int(np.sum(row_device == i)) for i, name in enumerate(names)}
        held = holdout_devices({d: n for d, n in counts.items() if n}, seed, share)
    if held:
        assert row_device is not None
        mask = np.isin(row_device, [names.index(d) for d in held])
    else:
        mask = holdout_mask(dataset.X, y, seed, share)
    return Split(
        X_train=dataset.X[~mask],
        y_train=None if y is None else y[~mask],
        X_holdout=dataset.X[mask],
        y_holdout=None if y is None else y[mask],
        by="device" if held else "row",
        holdout_devices=held,
    )


def _fit_scaler(X: FloatArray) -> tuple[FloatArray, FloatArray]:
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    # Constant features (a digit's always-blank corner pixel) get scale 1, as
    # scikit-learn's StandardScaler does, instead of a division by zero.
    scale[scale < 1e-12] = 1.0
    return mean, scale


@dataclass(frozen=True)
class FitNotes:
    warm_started: bool
    note: str


def fit(
    config: ModelConfig, data: Split, champion: TrainedModel | None
) -> tuple[TrainedModel, FitNotes]:
    params = config.estimator_params()
    X = data.X_train
    if len(X) < config.gate.min_rows:
        raise NotEnoughData(
            f"{len(X)} training rows after the holdout split; "
            f"gate.min_rows is {config.gate.min_rows}"
        )
    warm = champion if config.train.warm_start else None
    note = "cold start" if warm is None else "warm start from the champion"
    if warm is not None and (
        warm.kind != config.model.kind or warm.n_features != config.model.n_features
    ):
        warm, note = None, "cold start: the champion is a different kind or width"
    if warm is not None and warm.signal != config.signal:
        warm, note = None, "cold start: the champion computes other features (signal section)"
    growth = config.train.refit_scaler_growth
    if warm is not None and growth and len(X) >= growth * max(1, warm.scaler_rows):
        # A scaler fit on a small first batch misjudges features that barely
        # varied in it; once the data has grown enough, refit it and start over.
        note = (
            f"cold start: {len(X)} training rows, {len(X) / max(1, warm.scaler_rows):.1f}x the "
            f"{warm.scaler_rows} the scaler was fit on (train.refit_scaler_growth = {growth})"
        )
        warm = None
    # Raw windows become features once, here; the estimator and the scaler
    # never see a window.
    F = extract(config.signal, X) if config.signal is not None else X
    mean, scale = (warm.mean, warm.scale) if warm is not None else _fit_scaler(F)
    scaler_rows = warm.scaler_rows if warm is not None else len(X)
    Xs = (F - mean) / scale
    with warnings.catch_warnings():
        # Short warm-start rounds stop before convergence on purpose.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if isinstance(params, KMeansParams):
            estimator, warm_used = _fit_kmeans(config, params, Xs, warm)
            classes: tuple[int, ...] = ()
        else:
            assert data.y_train is not None  # classifier datasets always carry labels
            seen = tuple(sorted(int(c) for c in np.unique(data.y_train)))
            classes = config.model.classes or seen
            if len(classes) < 2:
                raise NotEnoughData(
                    f"training labels hold {len(classes)} class; a classifier needs two"
                )
            estimator, warm_used = _fit_classifier(config, params, Xs, data.y_train, warm)
    if warm is not None and not warm_used:
        note = "cold start: the champion's classes or cluster count differ"
    model = TrainedModel(
        kind=config.model.kind,
        n_features=config.model.n_features,
        mean=mean,
        scale=scale,
        estimator=estimator,
        classes=classes,
        scaler_rows=scaler_rows,
        signal=config.signal,
    )
    if isinstance(params, KMeansParams):
        _calibrate(model, X, params)
    return model, FitNotes(warm_started=warm is not None and warm_used, note=note)


def _fit_kmeans(
    config: ModelConfig, p: KMeansParams, Xs: FloatArray, warm: TrainedModel | None
) -> tuple[MiniBatchKMeans, bool]:
    if len(Xs) < p.n_clusters:
        raise NotEnoughData(f"{len(Xs)} training rows for {p.n_clusters} clusters")
    init: Any = "k-means++"
    n_init = p.n_init
    if warm is not None and warm.estimator.n_clusters == p.n_clusters:
        # Start from the champion's centroids, in its order, so cluster i stays
        # cluster i and the exported centroid tensor changes as little as it can.
        init, n_init = warm.estimator.cluster_centers_, 1
    km = MiniBatchKMeans(
        n_clusters=p.n_clusters,
        batch_size=p.batch_size,
        max_iter=p.max_iter,
        n_init=n_init,
        init=init,
        random_state=config.train.seed,
    )
    km.fit(Xs)
    return km, not isinstance(init, str)


def _fit_classifier(
    config: ModelConfig,
    p: MLPParams | LogisticParams,
    Xs: FloatArray,
    y: npt.NDArray[np.int64] | None,
    warm: TrainedModel | None,
) -> tuple[Any, bool]:
    assert y is not None
    seen = tuple(sorted(int(c) for c in np.unique(y)))
    usable = warm is not None and tuple(int(c) for c in warm.estimator.classes_) == seen
    estimator: Any
    if usable:
        assert warm is not None
        estimator = copy.deepcopy(warm.estimator)
        estimator.set_params(warm_start=True)
        if isinstance(p, MLPParams):
            estimator.set_params(max_iter=p.warm_max_iter)
            # scikit-learn keeps the previous fit's best loss on warm start; on new,
            # larger data that old (lower) loss makes every epoch look like no
            # improvement and training stops after n_iter_no_change epochs.
            estimator.best_loss_ = np.inf
            estimator._no_improvement_count = 0
    elif isinstance(p, MLPParams):
        estimator = MLPClassifier(
            hidden_layer_sizes=p.hidden_layer_sizes,
            alpha=p.alpha,
            learning_rate_init=p.learning_rate_init,
            max_iter=p.max_iter,
            random_state=config.train.seed,
        )
    else:
        estimator = LogisticRegression(C=p.C, max_iter=p.max_iter)
    estimator.fit(Xs, y)
    return estimator, usable


REFINE_EPOCHS = 30


def align(model: TrainedModel, champion: TrainedModel) -> None:
    """Number a cold k-means's centroids like the champion's nearest ones.

    Cluster order is arbitrary to k-means but not to a patch: matched centroids
    sit at the same offsets as before, so the update stays small.
    """
    if model.kind != "kmeans_anomaly" or champion.kind != "kmeans_anomaly":
        return
    ours = model.estimator.cluster_centers_ * model.scale + model.mean
    theirs = champion.estimator.cluster_centers_ * champion.scale + champion.mean
    if ours.shape != theirs.shape:
        return
    cost = ((theirs[:, None, :] - ours[None, :, :]) ** 2).sum(axis=2)
    _, order = linear_sum_assignment(cost)
    model.estimator.cluster_centers_ = model.estimator.cluster_centers_[order]


def refiner(
    config: ModelConfig, data: Split
) -> Callable[[TrainedModel, Callable[[TrainedModel], None]], None] | None:
    """Further training for a sparse update (MLPs; other kinds have no epochs to add)."""
    if config.model.kind != "mlp_classifier" or data.y_train is None:
        return None
    y = data.y_train

    def refine(model: TrainedModel, project: Callable[[TrainedModel], None]) -> None:
        Xs = model.scaled(data.X_train)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for _ in range(REFINE_EPOCHS):
                model.estimator.partial_fit(Xs, y)
                project(model)

    return refine


def recalibrate(model: TrainedModel, X_train: FloatArray, config: ModelConfig) -> None:
    """Set an anomaly model's threshold and score statistics again after its centroids moved."""
    params = config.estimator_params()
    if isinstance(params, KMeansParams):
        _calibrate(model, X_train, params)


def _calibrate(model: TrainedModel, X_train: FloatArray, p: KMeansParams) -> None:
    scores = model.outputs(X_train)
    if p.threshold_method == "mad":
        median = float(np.median(scores))
        mad = float(np.median(np.abs(scores - median)))
        model.decision_threshold = median + p.mad_k * 1.4826 * mad
    else:
        model.decision_threshold = float(np.quantile(scores, p.score_quantile))
    model.stats = {
        "score_mean": float(scores.mean()),
        "score_std": float(scores.std()),
        "score_p50": float(np.quantile(scores, 0.5)),
        "score_p90": float(np.quantile(scores, 0.9)),
        "score_p99": float(np.quantile(scores, 0.99)),
        "alarm_rate": float((scores > model.decision_threshold).mean()),
    }


def silhouette(model: TrainedModel, X: FloatArray, seed: int, sample: int | None = None) -> float:
    """Silhouette of a k-means model's clusters on `X`, on `sample` rows of it if given.

    Undefined with one cluster (or one row per cluster); a model that puts
    everything in one cluster separates nothing, so that is the worst score, -1.
    """
    Xs = model.scaled(X)
    labels = model.estimator.predict(Xs)
    if not 2 <= len(np.unique(labels)) <= len(X) - 1:
        return -1.0
    return float(silhouette_score(Xs, labels, sample_size=sample, random_state=seed))


def evaluate(model: TrainedModel, data: Split, config: ModelConfig) -> dict[str, float]:
    """The gate's metrics on the held-out rows (empty when there are none)."""
    X = data.X_holdout
    if len(X) == 0:
        return {}
    if model.kind == "kmeans_anomaly":
        p = config.estimator_params()
        assert isinstance(p, KMeansParams)
        score = silhouette(model, X, config.train.seed, sample=min(len(X), p.silhouette_sample))
        return {"silhouette": score, "holdout_rows": float(len(X))}
    assert data.y_holdout is not None
    predicted = model.predict(X)
    return {
        "accuracy": float(accuracy_score(data.y_holdout, predicted)),
        "f1_macro": float(f1_score(data.y_holdout, predicted, average="macro", zero_division=0)),
        "holdout_rows": float(len(X)),
    }
