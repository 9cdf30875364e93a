"""One training run: split, fit, evaluate, gate, export, check the export, record.

Every run produces a record, promoted or not, with the data it saw, its
metrics, the champion's metrics on the same held-out rows, the decision and
the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgeloop.contract import sha256_hex
from edgeloop.factory.config import ModelConfig
from edgeloop.factory.containment import Contained, train_contained
from edgeloop.factory.data import Batch, Dataset, Quarantined, assemble
from edgeloop.factory.export import int8_scales, to_tflite
from edgeloop.factory.gate import GateDecision, Paired, clearly_above, decide
from edgeloop.factory.screening import screen
from edgeloop.factory.signal import SignalSection, error_floors, extract, relative_errors
from edgeloop.factory.signal_graph import FEATURES_TENSOR, features_tflite
from edgeloop.factory.sparsify import sparsify
from edgeloop.factory.stream import (
    ChunkSource,
    LabelledChunkSource,
    fit_classifier_streaming,
    fit_kmeans_streaming,
)
from edgeloop.factory.training import (
    NotEnoughData,
    Split,
    TrainedModel,
    align,
    evaluate,
    fit,
    recalibrate,
    refiner,
    silhouette,
    split,
)

GOLDEN_ROWS = 8
HEALTH_TOLERANCE = 1e-4
# How closely the exported graph must reproduce scikit-learn before a model may ship.
# float32 must be exact to rounding. int8 weights move every output a little,
# so a classifier's int8 export is judged by its mean error and by how many
# held-out decisions it changes: at most 1% of them, and never fewer than one
# (on 36 held-out rows one borderline digit flipping is 2.8%, and the earlier
# rule refused sound exports on every small first batch). A broken graph
# (wrong scale, wrong op order) misses both by far.
EXPORT_TOLERANCE = {"none": 1e-4, "int8": 5e-2}
# A signal model's features, computed by the graph in the device's interpreter,
# must match NumPy's on every window checked to this relative error (near-zero
# values are judged against a floor: edgeloop.factory.signal.error_floors).
# float32 features measure ~1e-6 (`pytest tests/unit/factory/test_signal_graph.py`).
FEATURE_TOLERANCE = 1e-4
INT8_MEAN_TOLERANCE = 1e-2
MIN_INT8_AGREEMENT = 0.99


@dataclass(frozen=True)
class RunResult:
    decision: GateDecision
    record: dict[str, Any]
    model: TrainedModel | None = None
    tflite: bytes | None = None

    @property
    def promoted(self) -> bool:
        return self.decision.promoted


def _export_check(
    model: TrainedModel, tflite: bytes, X: np.ndarray, quantize: str
) -> dict[str, Any]:
    """Run the exported bytes in the device's interpreter and compare with scikit-learn."""
    from edgeloop.runtime import CompiledModel

    runtime = CompiledModel(tflite)
    got = runtime.predict(X).astype(np.float64)
    want = model.outputs(X)
    verdict = export_agrees(got, want, quantize, anomaly=model.kind == "kmeans_anomaly")
    check: dict[str, Any] = {"backend": runtime.backend, "rows": len(X), **verdict}
    if model.signal is not None:
        features = features_agree(model.signal, X, tflite)
        check["features"] = features
        check["ok"] = bool(check["ok"] and features["ok"])
    return {**check, "_outputs": got}


def health_tolerance(model: TrainedModel, expected: np.ndarray) -> float:
    """The device health check's absolute tolerance on these expected outputs.

    A signal model sums hundreds of samples per feature, in an order that
    differs between LiteRT and tflite-runtime 2.14, and the scaler magnifies
    a feature that barely varies: its outputs agree across runtimes to ~1e-5
    relative (tests/integration/factory/test_tflite_runtime_214.py), so the
    tolerance scales with the largest output, as the export check's does.
    """
    if model.signal is None or not expected.size:
        return HEALTH_TOLERANCE
    return HEALTH_TOLERANCE * max(1.0, float(np.max(np.abs(expected))))


def features_agree(
    signal: SignalSection, X: np.ndarray, tflite: bytes | None = None
) -> dict[str, Any]:
    """Whether a graph's features match NumPy's on every window of `X`.

    The features are read out of `tflite` itself (its FEATURES_TENSOR, kept
    by the interpreter on request) after it runs on the windows in the
    device's interpreter: the bytes that ship are the bytes checked. Without
    `tflite`, a graph of the pipeline alone is checked.
    """
    from edgeloop.runtime import CompiledModel

    if tflite is None:
        got = CompiledModel(features_tflite(signal)).predict(X).astype(np.float64)
    else:
        runtime = CompiledModel(tflite, inspect=True)
        runtime.predict(X)
        got = runtime.tensor(FEATURES_TENSOR).astype(np.float64)
    want = extract(signal, X)
    errors = relative_errors(got, want, error_floors(signal, X))
    names = signal.feature_names()
    if not errors.size:
        errors = np.zeros((0, len(names)))
    per_feature = errors.max(axis=0, initial=0.0)
    largest = float(per_feature.max(initial=0.0))
    worst = np.unravel_index(int(np.argmax(errors)), errors.shape) if errors.size else (0, 0)
    return {
        "max_relative_error": largest,
        "worst_feature": names[int(worst[1])],
        "worst_window": int(worst[0]),
        "per_feature": {name: float(e) for name, e in zip(names, per_feature, strict=True)},
        "windows": len(X),
        "tolerance": FEATURE_TOLERANCE,
        "ok": bool(largest <= FEATURE_TOLERANCE),
    }


def export_agrees(
    got: np.ndarray, want: np.ndarray, quantize: str, *, anomaly: bool
) -> dict[str, Any]:
    """Whether an export's outputs reproduce scikit-learn's closely enough to ship."""
    tolerance = EXPORT_TOLERANCE[quantize]
    if anomaly:
        error = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1.0)))
        mean_error, agreement, ok = error, 1.0, error <= tolerance
    else:
        error = float(np.max(np.abs(got - want)))
        mean_error = float(np.mean(np.abs(got - want)))
        changed = int(np.sum(got.argmax(axis=1) != want.argmax(axis=1)))
        agreement = 1.0 - changed / max(1, len(got))
        if quantize == "none":
            ok = error <= tolerance and changed == 0
        else:
            allowed = max(1, int((1.0 - MIN_INT8_AGREEMENT) * len(got)))
            ok = mean_error <= INT8_MEAN_TOLERANCE and changed <= allowed
    return {
        "max_error": error,
        "mean_error": mean_error,
        "tolerance": tolerance,
        "agreement": agreement,
        "ok": ok,
    }


def _fit(
    config: ModelConfig, parts: Split, champion: TrainedModel | None, record: dict[str, Any]
) -> tuple[TrainedModel, bool]:
    """Fit, warm-started when possible; the bool says whether the warm start was kept.

    A warm start from a champion fit on little data can stay in that fit's basin
    (a k-means with two centroids on one mode and none on another). With
    `train.cold_challenger`, a fit from scratch on the same rows competes on the
    held-out rows and replaces the warm start when it scores higher.
    """
    candidate, notes = fit(config, parts, champion)
    record["start"] = notes.note
    if not (notes.warm_started and champion is not None and config.train.cold_challenger):
        return candidate, notes.warm_started
    cold, _ = fit(config, parts, None)
    align(cold, champion)
    metric = config.gate.metric
    warm_score = evaluate(candidate, parts, config).get(metric)
    cold_score = evaluate(cold, parts, config).get(metric)
    verdict = {"warm": warm_score, "cold": cold_score, "kept": "warm"}
    record["cold_challenger"] = verdict
    if (
        warm_score is None
        or cold_score is None
        or not _clearly_better(cold, candidate, parts, config)
    ):
        return candidate, True
    verdict["kept"] = "cold"
    record["start"] = (
        f"cold start: a fit from scratch scored {metric} {cold_score:.4f} on the held-out rows, "
        f"clearly above the warm start's {warm_score:.4f}"
    )
    return cold, False


def _paired(challenger: TrainedModel, incumbent: TrainedModel, parts: Split) -> Paired | None:
    """Which held-out rows each classifier gets right, paired; None for k-means."""
    X, y = parts.X_holdout, parts.y_holdout
    if challenger.kind == "kmeans_anomaly" or y is None or len(X) == 0:
        return None
    return Paired.of(challenger.predict(X) == y, incumbent.predict(X) == y)


def _clearly_better(
    challenger: TrainedModel, incumbent: TrainedModel, parts: Split, config: ModelConfig
) -> bool:
    """Whether the challenger beats the incumbent by more than held-out noise.

    On a few hundred held-out rows two equally good fits differ by a row or
    two either way; replacing a warm start on such a coin flip would ship a
    dense update half of the time for nothing. The same rule as the gate's
    (edgeloop.factory.gate): a paired sign test for classifiers, a
    silhouette margin for k-means.
    """
    paired = _paired(challenger, incumbent, parts)
    if paired is not None:
        return paired.significant(config.gate.significance)
    X = parts.X_holdout
    sample = min(len(X), 2000)
    return clearly_above(
        silhouette(challenger, X, 0, sample),
        silhouette(incumbent, X, 0, sample),
        config.gate.silhouette_margin,
    )


def _shape_update(
    config: ModelConfig,
    parts: Split,
    candidate: TrainedModel,
    champion: TrainedModel,
    record: dict[str, Any],
) -> TrainedModel:
    """Make a warm-started candidate cheap to ship as a patch from the champion."""
    tolerance = config.export.sparsify_tolerance
    if tolerance is not None:
        rows = np.concatenate([parts.X_train, parts.X_holdout])
        result = sparsify(
            candidate,
            champion,
            rows,
            tolerance,
            prepare=lambda model: recalibrate(model, parts.X_train, config),
            refine=refiner(config, parts),
        )
        candidate = result.model
        record["sparsify"] = result.to_json()
    if config.export.quantize == "int8":
        candidate.int8_base = int8_scales(champion)
    return candidate


def _not_enough(config: ModelConfig, exc: NotEnoughData, record: dict[str, Any]) -> RunResult:
    decision = GateDecision(
        False,
        config.gate.metric,
        None,
        None,
        config.gate.threshold,
        config.gate.min_improvement,
        f"not enough data to train: {exc}",
    )
    record["gate"] = decision.to_json()
    return RunResult(decision, record)


def _comparable(champion: TrainedModel | None, candidate: TrainedModel) -> TrainedModel | None:
    """The champion, if its metrics mean anything beside the candidate's."""
    if champion is None or (champion.kind, champion.n_features, champion.input_width) != (
        candidate.kind,
        candidate.n_features,
        candidate.input_width,
    ):
        return None
    return champion


def train_run(
    config: ModelConfig,
    dataset: Dataset,
    champion: TrainedModel | None = None,
    reference: Dataset | None = None,
) -> RunResult:
    """Split, fit, gate on the held-out rows and on `reference`, export, check, record.

    `reference` is the platform's reference set (gate.reference): rows no
    device can write. A config that names one refuses to ship without it.
    Devices whose labels disagree with the fleet's are screened out first
    (edgeloop.factory.screening), from training and held-out rows alike.
    """
    screening = screen(dataset, config, champion, reference)
    dataset = screening.dataset
    parts = split(dataset, config)
    record: dict[str, Any] = {
        "model": config.model.name,
        "kind": config.model.kind,
        "config": config.to_dict(),
        "data": dataset.snapshot(),
        "screening": screening.to_json(),
        "screened": screening.screened_json(),
        "split": {
            "train_rows": len(parts.X_train),
            "holdout_rows": len(parts.X_holdout),
            "by": parts.by,
            "holdout_devices": list(parts.holdout_devices),
        },
    }
    if config.model.classes and parts.y_train is not None:
        # Declared classes the data never showed: the model outputs them but never
        # learnt them, which a good accuracy on the others would hide.
        seen = {int(c) for c in np.unique(parts.y_train)}
        unseen = [c for c in config.model.classes if c not in seen]
        if unseen:
            record["unseen_classes"] = unseen
    try:
        candidate, warm = _fit(config, parts, champion, record)
    except NotEnoughData as exc:
        return _not_enough(config, exc, record)
    if warm and champion is not None:
        candidate = _shape_update(config, parts, candidate, champion, record)
    metrics = evaluate(candidate, parts, config)
    rival = _comparable(champion, candidate)
    champion_metrics = evaluate(rival, parts, config) if rival is not None else {}
    paired = _paired(candidate, rival, parts) if rival is not None else None
    check_rows = parts.X_holdout if len(parts.X_holdout) else parts.X_train
    result = _gate_and_export(
        config, candidate, metrics, champion_metrics, check_rows, record, paired, rival
    )
    return _judge_on_reference(config, result, candidate, rival, reference)


def train_batches(
    config: ModelConfig,
    items: Sequence[Batch | Quarantined],
    champion: TrainedModel | None = None,
    reference: Dataset | None = None,
) -> Contained[str, RunResult]:
    """`train_run` over parsed uploads, keyed by upload: a batch that breaks the fit is
    left out and named with why (edgeloop.factory.containment), for the caller to
    quarantine. The retrain function and the training job both train this way."""
    good = {i.key: i for i in items if isinstance(i, Batch)}
    bad = [i for i in items if isinstance(i, Quarantined)]

    def in_memory(keys: Sequence[str]) -> RunResult:
        return train_run(
            config, assemble([*bad, *(good[k] for k in keys)], config), champion, reference
        )

    return train_contained(list(good), in_memory)


def contained_dataset(
    config: ModelConfig,
    items: Sequence[Batch | Quarantined],
    left_out: Collection[str],
    culprits: Sequence[Quarantined],
) -> Dataset:
    """What a contained run (train_batches) trained on: the uploads without those it
    left out, which count as quarantined (`culprits`) beside the bad ones."""
    bad = [i for i in items if isinstance(i, Quarantined)]
    kept = [i for i in items if isinstance(i, Batch) and i.key not in left_out]
    return assemble([*bad, *culprits, *kept], config)


def train_run_streamed(
    config: ModelConfig,
    chunks: Callable[[], Iterator[Any]],
    champion: TrainedModel | None = None,
    reference: Dataset | None = None,
) -> RunResult:
    """`train_run` on more rows than memory holds (factory/stream.py).

    `chunks` yields row arrays for k-means, (rows, labels) pairs for classifiers.
    The same gate, reference check, export check, health check and record; the
    held-out metrics and the export check run on the held-out sample.
    Sparsification, the cold challenger, the device cap, screening and the
    device split are in-memory steps and are not applied here.
    """
    if config.is_classifier:
        return _classifier_streamed(config, chunks, champion, reference)
    return _kmeans_streamed(config, chunks, champion, reference)


def _streamed_record(config: ModelConfig) -> dict[str, Any]:
    """A streamed run's record before it is judged: no data snapshot, the rows pass by."""
    return {
        "model": config.model.name,
        "kind": config.model.kind,
        "config": config.to_dict(),
        "data": {},
    }


def _kmeans_streamed(
    config: ModelConfig,
    chunks: ChunkSource,
    champion: TrainedModel | None,
    reference: Dataset | None,
) -> RunResult:
    record = _streamed_record(config)
    try:
        run = fit_kmeans_streaming(config, chunks, champion)
    except NotEnoughData as exc:
        return _not_enough(config, exc, record)
    held = run.holdout_sample
    record["start"] = run.note
    record["split"] = {"train_rows": run.train_rows, "holdout_rows": run.rows - run.train_rows}
    record["streamed"] = {"rows": run.rows, "passes": run.passes, "holdout_sample": len(held)}
    candidate = run.model
    champion_metrics: dict[str, float] = {}
    rival = _comparable(champion, candidate)
    if rival is not None:
        champion_metrics = {
            "silhouette": silhouette(rival, held, config.train.seed),
            "holdout_rows": run.metrics["holdout_rows"],
        }
        if config.export.quantize == "int8" and run.note.startswith("warm"):
            candidate.int8_base = int8_scales(rival)
    result = _gate_and_export(
        config, candidate, run.metrics, champion_metrics, held, record, champion=rival
    )
    return _judge_on_reference(config, result, candidate, rival, reference)


def _classifier_streamed(
    config: ModelConfig,
    chunks: LabelledChunkSource,
    champion: TrainedModel | None,
    reference: Dataset | None,
) -> RunResult:
    record = _streamed_record(config)
    try:
        run = fit_classifier_streaming(config, chunks)
    except NotEnoughData as exc:
        return _not_enough(config, exc, record)
    record["start"] = run.note
    record["split"] = {"train_rows": run.train_rows, "holdout_rows": run.rows - run.train_rows}
    record["streamed"] = {
        "rows": run.rows,
        "passes": run.passes,
        "holdout_sample": len(run.held_rows),
    }
    # Judged on the held-out sample: the gate's row count is the rows it saw.
    parts = Split(run.held_rows[:0], None, run.held_rows, run.held_labels)
    candidate = run.model
    metrics = evaluate(candidate, parts, config)
    rival = _comparable(champion, candidate)
    champion_metrics = evaluate(rival, parts, config) if rival is not None else {}
    paired = _paired(candidate, rival, parts) if rival is not None else None
    result = _gate_and_export(
        config, candidate, metrics, champion_metrics, run.held_rows, record, paired, rival
    )
    return _judge_on_reference(config, result, candidate, rival, reference)


def _judge_on_reference(
    config: ModelConfig,
    result: RunResult,
    candidate: TrainedModel,
    champion: TrainedModel | None,
    reference: Dataset | None,
) -> RunResult:
    """Refuse a candidate that does worse than the champion on the reference set.

    Held-out rows come from devices, so enough colluding devices can shape
    them; the reference set is rows no device can write. A regression there
    beyond gate.reference_tolerance (or, with no champion, a figure below the
    threshold there) refuses the candidate whatever the held-out rows say.
    """
    gate, metric = config.gate, config.gate.metric
    if reference is None and gate.reference is None:
        return result
    entry: dict[str, Any] = {"prefix": gate.reference, "tolerance": gate.reference_tolerance}
    result.record["reference"] = entry
    refusal: str | None
    if reference is None:
        entry["rows"] = 0
        refusal = (
            f"gate.reference names {gate.reference!r} but the run was given no reference set; "
            "upload the reference set there (only the platform team can) and pass it to the run"
        )
    else:
        rows = Split(reference.X[:0], None, reference.X, reference.y)
        ours = evaluate(candidate, rows, config)
        theirs = evaluate(champion, rows, config) if champion is not None else {}
        entry.update({"rows": reference.rows, "metrics": ours, "champion_metrics": theirs})
        refusal = _reference_refusal(config, ours.get(metric), theirs.get(metric))
    entry["passed"] = refusal is None
    if refusal is None or not result.decision.promoted:
        return result
    decision = replace(result.decision, promoted=False, reason=refusal)
    result.record["gate"] = decision.to_json()
    return RunResult(decision, result.record, result.model, result.tflite)


def _reference_refusal(config: ModelConfig, ours: float | None, theirs: float | None) -> str | None:
    gate, metric = config.gate, config.gate.metric
    if ours is None:
        return f"the reference set has no rows to measure {metric} on; upload reference data"
    if theirs is not None and ours < theirs - gate.reference_tolerance:
        return (
            f"{metric} {ours:.4f} on the reference set regresses from the champion's "
            f"{theirs:.4f} by more than gate.reference_tolerance {gate.reference_tolerance:g}; "
            "refused whatever the held-out rows say"
        )
    if theirs is None and ours < gate.threshold:
        return (
            f"{metric} {ours:.4f} on the reference set is below the threshold "
            f"{gate.threshold:.4f}; refused whatever the held-out rows say"
        )
    return None


def _gate_and_export(
    config: ModelConfig,
    candidate: TrainedModel,
    metrics: dict[str, float],
    champion_metrics: dict[str, float],
    check_rows: np.ndarray,
    record: dict[str, Any],
    paired: Paired | None = None,
    champion: TrainedModel | None = None,
) -> RunResult:
    """Gate, export, check the export in the device's interpreter, and record it all."""
    decision = decide(
        config.gate,
        metrics.get(config.gate.metric),
        champion_metrics.get(config.gate.metric),
        int(metrics.get("holdout_rows", 0)),
        paired,
    )
    quantize = config.export.quantize
    tflite = to_tflite(candidate, quantize)
    check = _export_check(candidate, tflite, check_rows, quantize)
    outputs = check.pop("_outputs")
    features = check.get("features")
    if decision.promoted and features is not None and not features["ok"]:
        decision = replace(
            decision,
            promoted=False,
            reason="the exported graph's features disagree with NumPy's "
            f"({features['worst_feature']} off by {features['max_relative_error']:.2e} "
            f"relative on window {features['worst_window']}, tolerance "
            f"{features['tolerance']:g}); not shipped",
        )
    elif decision.promoted and not check["ok"]:
        decision = replace(
            decision,
            promoted=False,
            reason="the exported model disagrees with scikit-learn "
            f"(max error {check['max_error']:.2e}, agreement {check['agreement']:.4f}); "
            "not shipped",
        )
    golden = np.asarray(check_rows[:GOLDEN_ROWS], dtype=np.float32)
    expected = np.asarray(outputs[:GOLDEN_ROWS]).reshape(len(golden), -1)
    kept = champion.golden if champion is not None else None
    if kept is not None and kept.shape[1:] == golden.shape[1:]:
        # The champion's golden inputs again: devices hold them (a content-addressed
        # target) and fetch only the new expected outputs. Held-out rows stay held out.
        from edgeloop.runtime import CompiledModel

        golden = np.asarray(kept, dtype=np.float32)
        outputs_now = CompiledModel(tflite).predict(golden)
        expected = np.asarray(outputs_now).reshape(len(golden), -1)
    candidate.golden = golden.astype(np.float64)
    record.update(
        {
            "metrics": metrics,
            "champion_metrics": champion_metrics,
            "gate": decision.to_json(),
            "export": {
                "quantize": quantize,
                "sha256": sha256_hex(tflite),
                "size": len(tflite),
                "check": check,
            },
            "decision_threshold": candidate.decision_threshold,
            "stats": candidate.stats,
            "output_names": [str(c) for c in candidate.classes] or ["anomaly_score"],
            "health_check": {
                "inputs": golden.astype(float).tolist(),
                "expected": expected.astype(float).tolist(),
                "tolerance": health_tolerance(candidate, expected),
            },
        }
    )
    return RunResult(decision, record, candidate, tflite)
