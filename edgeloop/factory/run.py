"""One training run: split, fit, evaluate, gate, export, check the export, record.

Every run produces a record, promoted or not, with the data it saw, its
metrics, the champion's metrics on the same held-out rows, the decision and
the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeloop.contract.manifest import sha256_hex
from edgeloop.factory.config import ModelConfig
from edgeloop.factory.data import Dataset
from edgeloop.factory.export import to_tflite
from edgeloop.factory.gate import GateDecision, decide
from edgeloop.factory.training import NotEnoughData, TrainedModel, evaluate, fit, split

GOLDEN_ROWS = 8
HEALTH_TOLERANCE = 1e-4
# How closely the exported graph must reproduce scikit-learn before a model may ship.
EXPORT_TOLERANCE = {"none": 1e-4, "int8": 5e-2}
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
    from edge.runtime import CompiledModel

    runtime = CompiledModel(tflite)
    got = runtime.predict(X).astype(np.float64)
    want = model.outputs(X)
    if model.kind == "kmeans_anomaly":
        error = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1.0)))
        agreement = 1.0
    else:
        error = float(np.max(np.abs(got - want)))
        agreement = float(np.mean(got.argmax(axis=1) == want.argmax(axis=1)))
    tolerance = EXPORT_TOLERANCE[quantize]
    needed = 1.0 if quantize == "none" else MIN_INT8_AGREEMENT
    ok = error <= tolerance and agreement >= needed
    return {
        "backend": runtime.backend,
        "rows": len(X),
        "max_error": error,
        "tolerance": tolerance,
        "agreement": agreement,
        "ok": ok,
        "_outputs": got,
    }


def train_run(
    config: ModelConfig, dataset: Dataset, champion: TrainedModel | None = None
) -> RunResult:
    parts = split(dataset, config)
    record: dict[str, Any] = {
        "model": config.model.name,
        "kind": config.model.kind,
        "config": config.to_dict(),
        "data": dataset.snapshot(),
        "split": {"train_rows": len(parts.X_train), "holdout_rows": len(parts.X_holdout)},
    }
    try:
        candidate, notes = fit(config, parts, champion)
    except NotEnoughData as exc:
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
    record["start"] = notes.note
    metrics = evaluate(candidate, parts, config)
    champion_metrics: dict[str, float] = {}
    if champion is not None and (champion.kind, champion.n_features) == (
        candidate.kind,
        candidate.n_features,
    ):
        champion_metrics = evaluate(champion, parts, config)
    decision = decide(
        config.gate,
        metrics.get(config.gate.metric),
        champion_metrics.get(config.gate.metric),
        int(metrics.get("holdout_rows", 0)),
    )

    quantize = config.export.quantize
    tflite = to_tflite(candidate, quantize)
    check_rows = parts.X_holdout if len(parts.X_holdout) else parts.X_train
    check = _export_check(candidate, tflite, check_rows, quantize)
    outputs = check.pop("_outputs")
    if decision.promoted and not check["ok"]:
        decision = GateDecision(
            False,
            decision.metric,
            decision.candidate,
            decision.champion,
            decision.threshold,
            decision.min_improvement,
            f"the exported model disagrees with scikit-learn (max error {check['max_error']:.2e}, "
            f"agreement {check['agreement']:.4f}); not shipped",
        )
    golden = np.asarray(check_rows[:GOLDEN_ROWS], dtype=np.float32)
    expected = np.asarray(outputs[:GOLDEN_ROWS]).reshape(len(golden), -1)
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
                "tolerance": HEALTH_TOLERANCE,
            },
        }
    )
    return RunResult(decision, record, candidate, tflite)
