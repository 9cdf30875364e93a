"""Bytes shipped per device per update, over a sequence of retrains on growing data.

Each step retrains (warm-started from the last shipped model) on more data than
the one before, exactly as the factory does, and publishes what the planner
plans: a device holding the previous version fetches the smallest thing that
gets it to the new one, a patch or the compressed full artifact. The figure is
that size divided by the zstd-compressed full artifact, median over the steps.

Quality is judged on rows no model trained on: a digits test split, and for
k-means a labelled stream with planted anomalies (alarm F1). Each step also
trains a cold model on the same data, and the deployed model must stay within
0.5 points of it.
"""

from __future__ import annotations

import statistics
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import f1_score

from edge.sources import synthetic_vibration
from edgeloop.contract import CODECS
from edgeloop.delta import LayoutChanged, make_patch
from edgeloop.demo.scenarios import ANOMALY_TOML
from edgeloop.factory.config import ModelConfig, parse_config
from edgeloop.factory.data import Dataset
from edgeloop.factory.deltas import plan_deltas
from edgeloop.factory.run import train_run
from edgeloop.runtime import CompiledModel

STEPS = 9  # 9 models: 8 updates
TOLERANCE_POINTS = 0.5
QUALITY_GOAL_RATIO = 0.25

# The shipped configurations, with the gate opened so every retrain ships: the
# figure is what an update costs, not how often the gate lets one through.
DIGITS = (
    (Path(__file__).parents[1] / "models" / "digits.toml")
    .read_text()
    .replace("threshold = 0.93", "threshold = 0.0")
    .replace("min_improvement = 0.005", "min_improvement = 0.0")
)
VIBRATION = ANOMALY_TOML.replace("threshold = 0.5", "threshold = 0.0").replace(
    "min_improvement = 0.002", "min_improvement = 0.0"
)


@dataclass(frozen=True)
class Variant:
    model: str  # digits | vibration
    quantize: str
    sparsify: float | None

    @property
    def name(self) -> str:
        sparse = "dense" if self.sparsify is None else f"sparse{self.sparsify:g}"
        return f"{self.model}-{self.quantize}-{sparse}"

    def config(self) -> ModelConfig:
        doc = tomllib.loads(DIGITS if self.model == "digits" else VIBRATION)
        doc["export"] = {"quantize": self.quantize}
        if self.sparsify is not None:
            doc["export"]["sparsify_tolerance"] = self.sparsify
        return parse_config(doc)


def _digits_data(seed: int) -> tuple[list[Dataset], np.ndarray, np.ndarray]:
    d = load_digits()
    order = np.random.default_rng(seed).permutation(len(d.target))
    test, pool = order[:360], order[360:]
    steps = [
        Dataset(
            X=d.data[pool[: len(pool) * k // STEPS]].astype(np.float64),
            y=d.target[pool[: len(pool) * k // STEPS]].astype(np.int64),
            batches=(),
        )
        for k in range(1, STEPS + 1)
    ]
    return steps, d.data[test].astype(np.float32), d.target[test]


def _vibration_data(seed: int) -> tuple[list[Dataset], np.ndarray, np.ndarray]:
    stream = list(synthetic_vibration(8, 0.01, seed=seed, count=600 * STEPS))
    X = np.stack([s.x for s in stream]).astype(np.float64)
    test = list(synthetic_vibration(8, 0.02, seed=seed + 1000, count=4000))
    X_test = np.stack([s.x for s in test]).astype(np.float32)
    y_test = np.array([s.planted_anomaly for s in test])
    steps = [Dataset(X=X[: 600 * k], y=None, batches=()) for k in range(1, STEPS + 1)]
    return steps, X_test, y_test


def _quality(
    model: str, tflite: bytes, threshold: float | None, X: np.ndarray, y: np.ndarray
) -> float:
    """Accuracy (digits) or alarm F1 against the planted anomalies (vibration), in the
    device's interpreter, so what is judged is exactly what ships."""
    out = CompiledModel(tflite).predict(X)
    if model == "digits":
        return float(np.mean(out.argmax(axis=1) == y))
    assert threshold is not None
    return float(f1_score(y, out.reshape(-1) > threshold))


def run_sequence(variant: Variant, seed: int) -> dict[str, Any]:
    config = variant.config()
    steps, X_test, y_test = (_digits_data if variant.model == "digits" else _vibration_data)(seed)
    champion = None
    published: dict[int, bytes] = {}
    rows = []
    for version, data in enumerate(steps, start=1):
        run = train_run(config, data, champion)
        assert run.model is not None
        assert run.tflite is not None
        cold = train_run(config, data, None)
        assert cold.model is not None
        assert cold.tflite is not None
        tflite = run.tflite
        previous = published.get(version - 1)
        plan = plan_deltas(tflite, {version - 1: previous} if previous else {})
        yardstick = plan.compressed_full_size
        row: dict[str, Any] = {
            "version": version,
            "rows": len(data.X),
            "start": run.record["start"],
            "kept_share": run.record.get("sparsify", {}).get("kept_share"),
            "model_bytes": len(tflite),
            "compressed_full_bytes": yardstick,
            "quality": _quality(
                variant.model, tflite, run.model.decision_threshold, X_test, y_test
            ),
            "cold_quality": _quality(
                variant.model, cold.tflite, cold.model.decision_threshold, X_test, y_test
            ),
        }
        if previous is not None:
            shipped = plan.shipped_bytes(version - 1)
            # Every codec's patch again, for the breakdown: the plan keeps only the best.
            codecs: dict[str, int | None] = {}
            for codec in CODECS:
                try:
                    codecs[codec] = len(make_patch(previous, tflite, codec))
                except LayoutChanged:
                    codecs[codec] = None
            row.update(
                {
                    "shipped_bytes": shipped,
                    "shipped_ratio": shipped / yardstick,
                    "shipped_as": plan.patches[0].codec if plan.patches else "full (zstd)",
                    "patch_bytes_by_codec": codecs,
                }
            )
        rows.append(row)
        published[version] = tflite
        champion = run.model
    updates = [r for r in rows if "shipped_ratio" in r]
    gaps = [(r["cold_quality"] - r["quality"]) * 100 for r in rows]
    return {
        "seed": seed,
        "median_ratio": statistics.median(r["shipped_ratio"] for r in updates),
        "max_ratio": max(r["shipped_ratio"] for r in updates),
        "mean_gap_points": statistics.fmean(gaps),
        "final_gap_points": gaps[-1],
        "steps": rows,
    }


def measure(variants: list[Variant], seeds: tuple[int, ...] = (0, 1, 2)) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": STEPS, "seeds": list(seeds), "variants": {}}
    for variant in variants:
        runs = [run_sequence(variant, seed) for seed in seeds]
        summary = {
            "median_ratio": statistics.median(r["median_ratio"] for r in runs),
            "max_ratio": max(r["max_ratio"] for r in runs),
            "mean_gap_points": statistics.fmean(r["mean_gap_points"] for r in runs),
            "final_gap_points": statistics.fmean(r["final_gap_points"] for r in runs),
        }
        summary["meets_goal"] = (
            summary["median_ratio"] <= QUALITY_GOAL_RATIO
            and summary["mean_gap_points"] <= TOLERANCE_POINTS
            and summary["max_ratio"] <= 1.0
        )
        out["variants"][variant.name] = {"summary": summary, "runs": runs}
        print(variant.name, summary, flush=True)
    return out


VARIANTS = [
    Variant("digits", "int8", 0.01),
    Variant("vibration", "int8", None),
    Variant("digits", "none", None),
]


if __name__ == "__main__":
    import sys

    model, quantize, *rest = sys.argv[1:]
    measure([Variant(model, quantize, float(rest[0]) if rest else None)])
