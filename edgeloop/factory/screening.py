"""Screening: a device whose labels disagree with the rest of the fleet is left out of a run.

The device cap bounds how many rows one device brings; it does not judge what
the rows say. One device of twenty uploading every label shifted by one, at
five times an honest device's volume, was a fifth of every run: the candidate
learned enough of the shift to fall below the gate on the honest held-out
devices, and nothing shipped again (a denial of service by one device).

Each device's rows are judged by a classifier that did not learn from them,
and its agreement (the share of its rows whose label that judge predicts) is
compared with the fleet's. The judge is, in order of preference:

- the champion: it cleared the gate (and the reference set, when there is
  one) and costs only a prediction per row. It may have trained on a
  device's earlier rows, which flatters honest devices and a device that
  was honest then; the rows a device turns bad with are new to it.
- at a cold start with a reference set: a logistic regression fit on the
  reference set, which no device can write.
- otherwise, out of fold by device: the devices are dealt into a few folds
  and each fold is judged by a logistic regression fit on the others, every
  device weighing the same there, so a device's volume buys it no more say
  over the judge than its vote.

The median and MAD over devices tolerate anything under half the fleet
disagreeing. A device is screened when even the upper confidence bound of its
agreement is below median - max(screen_k x 1.4826 x MAD, screen_min_gap): a
device with a handful of rows is not screened for one or two of them.

k-means is not screened: it learns without labels, so there is no label to
disagree with; its protection is the device cap and the silhouette gate.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from edgeloop.factory.config import ModelConfig
from edgeloop.factory.data import Dataset, DeviceShare
from edgeloop.factory.gate import wilson_lower_bound
from edgeloop.factory.signal import extract
from edgeloop.factory.training import TrainedModel, device_rank

# Fewer devices than this have no fleet to disagree with: of two devices
# that disagree, neither can be told to be the odd one out.
MIN_DEVICES = 3
FOLDS = 5
# The judge is a cheap linear fit; above this many rows it trains on a seeded
# subset, so screening costs about the same however large the run.
JUDGE_ROWS = 20_000
JUDGE_MAX_ITER = 200
# One-sided confidence of the upper bound a device's agreement is judged by.
CONFIDENCE = 0.95
# 1.4826 x MAD estimates a standard deviation for normally spread figures.
MAD_TO_SD = 1.4826
# Out of fold, the judges are fit again without the devices screened, up to
# this many times in all.
OUT_OF_FOLD_PASSES = 3


@dataclass(frozen=True)
class DeviceAgreement:
    """How far one device's labels agree with a judge that did not learn from them."""

    device: str
    rows: int  # rows the judge could speak to (labels of classes it knows)
    agreement: float
    upper: float  # the agreement's one-sided upper confidence bound

    def to_json(self, median: float) -> dict[str, Any]:
        return {
            "device": self.device,
            "rows": self.rows,
            "agreement": round(self.agreement, 4),
            "upper_bound": round(self.upper, 4),
            "median": round(median, 4),
        }


@dataclass(frozen=True)
class Screening:
    """The run's dataset without the screened devices, and the evidence for each."""

    dataset: Dataset
    judge: str  # champion, reference, out_of_fold; or none
    note: str
    agreements: tuple[DeviceAgreement, ...] = ()
    screened: tuple[DeviceAgreement, ...] = ()
    median: float | None = None
    below: float | None = None  # an upper bound under this is screened

    def to_json(self) -> dict[str, Any]:
        """The run record's `screening` entry (the devices left out: screened_json)."""
        median = self.median if self.median is not None else 0.0
        return {
            "judge": self.judge,
            "note": self.note,
            "devices_judged": len(self.agreements),
            "median": None if self.median is None else round(self.median, 4),
            "screened_below": None if self.below is None else round(self.below, 4),
            "lowest": min(
                (a.to_json(median) for a in self.agreements),
                default=None,
                key=lambda a: a["agreement"],
            ),
        }

    def screened_json(self) -> list[dict[str, Any]]:
        """The run record's `screened`: each device left out, its agreement and the median."""
        median = self.median if self.median is not None else 0.0
        return [a.to_json(median) for a in self.screened]


IntArray = npt.NDArray[np.int64]


def screen(
    dataset: Dataset,
    config: ModelConfig,
    champion: TrainedModel | None = None,
    reference: Dataset | None = None,
) -> Screening:
    """Judge every device's labels and drop the devices far below the fleet's agreement."""
    names, row_device, y = dataset.device_names, dataset.row_device, dataset.y
    if not config.train.screen_devices:
        return Screening(dataset, "none", "train.screen_devices is off")
    if not config.is_classifier or y is None:
        return Screening(dataset, "none", "unlabelled data: nothing to disagree with")
    present = [] if row_device is None else np.unique(row_device).tolist()
    if row_device is None or len(present) < MIN_DEVICES:
        return Screening(
            dataset,
            "none",
            f"{len(present)} device(s); screening needs {MIN_DEVICES} to tell an odd one out",
        )
    # Judges fit on what the model sees: features, when the rows are raw windows.
    features = _features(dataset, config)
    judge, predicted, known = _judge(dataset, features, config, champion, reference)
    verdict = _verdict(config, names, row_device, y, predicted, known)
    # Out of fold, the devices screened helped fit the judges of everyone
    # else; judged again without them, devices that hid behind them show.
    for _ in range(OUT_OF_FOLD_PASSES - 1):
        if judge != "out_of_fold" or verdict is None or not verdict.screened:
            break
        distrusted = {names.index(a.device) for a in verdict.screened}
        again = _verdict(
            config, names, row_device, y, *_out_of_fold(features, config.train.seed, distrusted)
        )
        if again is None:
            break
        settled = {a.device for a in again.screened} == {a.device for a in verdict.screened}
        verdict = again  # its figures come from judges the screened devices did not fit
        if settled:
            break
    if verdict is None:
        return Screening(dataset, judge, "too few devices had rows the judge could speak to")
    screened = verdict.screened
    note = (
        f"{len(screened)} of {len(verdict.agreements)} devices far below the fleet's agreement"
        if screened
        else f"all {len(verdict.agreements)} devices agree with the fleet"
    )
    return Screening(
        _without(dataset, {a.device for a in screened}),
        judge,
        note,
        verdict.agreements,
        screened,
        verdict.median,
        verdict.below,
    )


@dataclass(frozen=True)
class _Verdict:
    agreements: tuple[DeviceAgreement, ...]
    screened: tuple[DeviceAgreement, ...]
    median: float
    below: float


def _verdict(
    config: ModelConfig,
    names: tuple[str, ...],
    row_device: npt.NDArray[np.intp],
    y: IntArray,
    predicted: IntArray,
    known: set[int],
) -> _Verdict | None:
    """The devices far below the fleet's median agreement; None with too few judged."""
    agreements = _agreements(names, row_device, y, predicted, known)
    if len(agreements) < MIN_DEVICES:
        return None
    points = np.array([a.agreement for a in agreements])
    median = float(np.median(points))
    mad = float(np.median(np.abs(points - median)))
    gap = max(config.train.screen_k * MAD_TO_SD * mad, config.train.screen_min_gap)
    below = median - gap
    return _Verdict(agreements, tuple(a for a in agreements if a.upper < below), median, below)


def _features(dataset: Dataset, config: ModelConfig) -> Dataset:
    if config.signal is None:
        return dataset
    return replace(dataset, X=extract(config.signal, dataset.X))


def _judge(
    dataset: Dataset,
    features: Dataset,
    config: ModelConfig,
    champion: TrainedModel | None,
    reference: Dataset | None,
) -> tuple[str, IntArray, set[int]]:
    """Which judge, its prediction for every row, and the classes it knows.

    A row whose label the judge never saw says nothing about the device: a
    device that is first to see a class is new, not wrong.
    """
    assert dataset.y is not None
    assert dataset.row_device is not None
    if (
        champion is not None
        and champion.kind != "kmeans_anomaly"
        and champion.n_features == config.model.n_features
        and champion.input_width == config.input_width
    ):
        known = {int(c) for c in champion.estimator.classes_}
        return "champion", champion.predict(dataset.X), known
    if reference is not None and reference.y is not None and len(np.unique(reference.y)) >= 2:
        model = _fit_judge(_features(reference, config).X, reference.y, None, config.train.seed)
        known = {int(c) for c in model.classes_}
        return "reference", np.asarray(model.predict(features.X), dtype=np.int64), known
    return "out_of_fold", *_out_of_fold(features, config.train.seed)


def _out_of_fold(
    dataset: Dataset, seed: int, distrusted: set[int] | None = None
) -> tuple[IntArray, set[int]]:
    """Each fold of devices predicted by a judge fit on the other folds' devices.

    `distrusted` devices (indexes into device_names) are judged but help fit no judge.
    """
    y, row_device = dataset.y, dataset.row_device
    assert y is not None
    assert row_device is not None
    names = dataset.device_names
    present = [int(i) for i in np.unique(row_device)]
    order = sorted(present, key=lambda i: (device_rank(names[i], seed), names[i]))
    folds = min(FOLDS, len(order))
    fold_of = np.full(len(names), -1, dtype=np.intp)
    for place, i in enumerate(order):
        fold_of[i] = place % folds
    row_fold = fold_of[row_device]
    # Every device weighs the same in each judge, whatever it uploaded. The
    # weights average 1, so the judge's regularisation means what it does unweighted.
    counts = np.bincount(row_device, minlength=len(names)).astype(np.float64)
    weight = len(y) / (len(present) * counts[row_device])
    predicted = np.full(len(y), -1, dtype=np.int64)
    known: set[int] = set()
    for fold in range(folds):
        judged = row_fold == fold
        train = np.flatnonzero(~judged & ~np.isin(row_device, list(distrusted or ())))
        if len(np.unique(y[train])) < 2:
            continue  # no judge for this fold: its devices go unjudged
        model = _fit_judge(dataset.X[train], y[train], weight[train], seed + fold)
        fold_known = {int(c) for c in model.classes_}
        rows = np.flatnonzero(judged)
        guess = np.asarray(model.predict(dataset.X[rows]), dtype=np.int64)
        # Per fold, a label this fold's judge never saw counts as unjudged.
        predicted[rows] = np.where(np.isin(y[rows], list(fold_known)), guess, -2)
        known |= fold_known
    return predicted, known


def _fit_judge(
    X: npt.NDArray[np.float64],
    y: IntArray,
    weight: npt.NDArray[np.float64] | None,
    seed: int,
) -> Pipeline:
    if len(X) > JUDGE_ROWS:
        keep = np.sort(np.random.default_rng(seed).choice(len(X), JUDGE_ROWS, replace=False))
        X, y = X[keep], y[keep]
        weight = None if weight is None else weight[keep]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=JUDGE_MAX_ITER))
    # One BLAS thread: on matrices this small, threads only wait for each
    # other, and on a busy machine a fit took 50x longer with two (3.7 s, not 0.08).
    with warnings.catch_warnings(), threadpool_limits(1):
        # A judge needs to rank devices, not to converge to the last digit.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y, logisticregression__sample_weight=weight)
    return model


def _agreements(
    names: tuple[str, ...],
    row_device: npt.NDArray[np.intp],
    y: IntArray,
    predicted: IntArray,
    known: set[int],
) -> tuple[DeviceAgreement, ...]:
    # -1: the row's fold had no judge; -2: its label was unknown to its judge.
    judged = (predicted >= 0) & np.isin(y, list(known))
    out = []
    for i, name in enumerate(names):
        rows = judged & (row_device == i)
        n = int(rows.sum())
        if n == 0:
            continue
        agreement = float(np.mean(predicted[rows] == y[rows]))
        upper = 1.0 - wilson_lower_bound(1.0 - agreement, n, CONFIDENCE)
        out.append(DeviceAgreement(name, n, agreement, upper))
    return tuple(out)


def _without(dataset: Dataset, devices: set[str]) -> Dataset:
    """The dataset without the rows of `devices`; each keeps its entry with 0 rows kept."""
    if not devices:
        return dataset
    assert dataset.row_device is not None
    gone = [dataset.device_names.index(d) for d in devices]
    keep = ~np.isin(dataset.row_device, gone)
    shares = tuple(
        DeviceShare(s.device, s.uploaded, 0) if s.device in devices else s for s in dataset.devices
    )
    return replace(
        dataset,
        X=dataset.X[keep],
        y=None if dataset.y is None else dataset.y[keep],
        row_device=dataset.row_device[keep],
        devices=shares,
    )
