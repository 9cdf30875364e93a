"""Update sparsification: ship only the weight changes that matter to the metric.

A warm-started retrain nudges every weight, so every byte of the exported model
changes and no patch can be small. Most of those nudges do not change a single
prediction. `sparsify` keeps the champion's value for every weight except the
largest changes, and picks the smallest share of changes whose model scores
within `tolerance` of the fully retrained candidate on the held-out rows. The
sparse model is then what is gated, exported, checked and shipped: nothing is
judged on one model and shipped as another.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.factory.training import TrainedModel

FloatArray = npt.NDArray[np.float64]
# Shares of the changed weights tried, smallest first; 1.0 is the dense candidate.
KEEP_SHARES = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75)
# A step of training that keeps calling `project` to put the frozen weights back.
Refine = Callable[[TrainedModel, Callable[[TrainedModel], None]], None]


@dataclass(frozen=True)
class Sparsified:
    model: TrainedModel
    kept_share: float
    agreement: float
    note: str

    def to_json(self) -> dict[str, Any]:
        return {"kept_share": self.kept_share, "agreement": self.agreement, "note": self.note}


def _arrays(model: TrainedModel) -> list[FloatArray]:
    """The model's trainable weights, as the estimator holds them (by reference)."""
    est = model.estimator
    if model.kind == "kmeans_anomaly":
        return [est.cluster_centers_]
    if model.kind == "mlp_classifier":
        return [*est.coefs_, *est.intercepts_]
    return [est.coef_, est.intercept_]


def same_layout(a: TrainedModel, b: TrainedModel) -> bool:
    """True when the weights line up one to one and the scaler is the same."""
    left, right = _arrays(a), _arrays(b)
    return (
        a.kind == b.kind
        and len(left) == len(right)
        and all(x.shape == y.shape for x, y in zip(left, right, strict=True))
        and np.array_equal(a.mean, b.mean)
        and np.array_equal(a.scale, b.scale)
    )


def _input_weights(model: TrainedModel, X: FloatArray) -> list[Any]:
    """How much a change to each weight can move the next layer: the mean size of
    the input it multiplies (1 for biases and centroids). A weight on a pixel that
    is blank in every digit changes nothing, however far it moves."""
    est = model.estimator
    if model.kind == "kmeans_anomaly":
        return [1.0]
    h = model.scaled(X)
    if model.kind == "logistic_classifier":
        return [np.abs(h).mean(axis=0)[None, :], 1.0]
    weights: list[Any] = []
    for i, (w, b) in enumerate(zip(est.coefs_, est.intercepts_, strict=True)):
        weights.append(np.abs(h).mean(axis=0)[:, None])
        h = h @ w + b
        if i < len(est.coefs_) - 1:
            h = np.maximum(h, 0.0)
    return weights + [1.0] * len(est.intercepts_)


def _pin(model: TrainedModel, champion: TrainedModel, keep: list[Any]) -> None:
    for target, old, mask in zip(_arrays(model), _arrays(champion), keep, strict=True):
        np.copyto(target, old, where=~mask)


def _merge(candidate: TrainedModel, champion: TrainedModel, keep: list[Any]) -> TrainedModel:
    merged = copy.deepcopy(candidate)
    for target, old, mask in zip(_arrays(merged), _arrays(champion), keep, strict=True):
        target[...] = np.where(mask, target, old)
    return merged


def decisions(model: TrainedModel, X: FloatArray) -> npt.NDArray[np.int64]:
    """What a device acts on: the class, or the nearest mode and whether it alarms."""
    if model.kind != "kmeans_anomaly":
        return model.predict(X)
    nearest = model.estimator.predict(model.scaled(X)).astype(np.int64)
    alarms = model.outputs(X) > (model.decision_threshold or np.inf)
    out: npt.NDArray[np.int64] = nearest * 2 + alarms
    return out


def sparsify(
    candidate: TrainedModel,
    champion: TrainedModel,
    X: FloatArray,
    tolerance: float,
    prepare: Callable[[TrainedModel], None] = lambda _: None,
    refine: Refine | None = None,
) -> Sparsified:
    """The sparsest merge of `candidate` into `champion` within `tolerance` disagreement on X.

    Changes are ranked by how far they can move the layer they feed: the size
    of the change times the mean size of the input it multiplies. With
    `refine`, each merge is trained further with every weight outside the kept
    share pinned to the champion's value (projected gradient steps), which
    recovers most of what the dropped changes did. `prepare` runs on each merge
    before it is judged (an anomaly model recalibrates its threshold there).
    """
    if not same_layout(candidate, champion):
        return Sparsified(candidate, 1.0, 1.0, "dense: the layout or scaler changed")
    want = decisions(candidate, X)
    changes = [
        np.abs(new - old) * weight
        for new, old, weight in zip(
            _arrays(candidate), _arrays(champion), _input_weights(champion, X), strict=True
        )
    ]
    flat = np.concatenate([c.ravel() for c in changes])
    moved = int(np.count_nonzero(flat))
    if moved == 0:
        return Sparsified(candidate, 1.0, 1.0, "dense: no weight changed")
    for share in KEEP_SHARES:
        count = max(1, round(share * moved))
        cut = np.partition(flat, len(flat) - count)[len(flat) - count]
        keep = [c >= cut for c in changes]
        model = _merge(candidate, champion, keep)
        if refine is not None:
            refine(model, partial(_pin, champion=champion, keep=keep))
        prepare(model)
        agreement = float(np.mean(decisions(model, X) == want))
        if agreement >= 1.0 - tolerance:
            return Sparsified(
                model,
                share,
                agreement,
                f"kept the largest {share:.0%} of {moved} weight changes; the result agrees "
                f"with the dense retrain on {agreement:.2%} of {len(X)} rows",
            )
    return Sparsified(
        candidate, 1.0, 1.0, f"dense: no sparser merge agrees on {1.0 - tolerance:.2%} of the rows"
    )
