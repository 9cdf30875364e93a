"""On-device inference against scikit-learn, on the same trained models.

Single-sample latency is what a device scoring a live stream pays per reading.
Each side is timed in a clean interpreter of its own (bench/inference_worker.py):
scikit-learn's `predict` on one row with the same standardisation in front;
edgeloop over LiteRT here, and over tflite-runtime 2.14 under NumPy 1.x in its
own venv. A process that had trained with scikit-learn keeps its thread pools
and heap, and timed LiteRT at five times what it costs alone.

Beside edgeloop's scoring path (`Scorer.score_one`: the model, the finite
check, the alarm) each edge worker times the bare interpreter's set-tensor, invoke and
get-tensor, calls alternating so drift hits both: that is the limit, and the
goal is to stay within GOAL_OVERHEAD of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import load_digits

from bench.common import interpreters, percentiles
from edge.sources import synthetic_vibration
from edgeloop.contract import Manifest
from edgeloop.demo.scenarios import ANOMALY_TOML
from edgeloop.factory.config import ModelConfig, parse_config
from edgeloop.factory.data import Dataset
from edgeloop.factory.deltas import plan_deltas
from edgeloop.factory.release import build_release
from edgeloop.factory.run import RunResult, train_run

SINGLE_CALLS = 5000
GOAL_SPEEDUP = 20.0
# edgeloop's single-sample scoring against the bare interpreter's own calls.
GOAL_OVERHEAD = 1.5
TREE = Path(__file__).parents[1]
DIGITS_TOML = (TREE / "models" / "digits.toml").read_text()


def _models() -> dict[str, tuple[RunResult, Manifest, np.ndarray]]:
    X, y = load_digits(return_X_y=True)
    digits_config = parse_config(tomllib.loads(DIGITS_TOML))
    digits = train_run(
        digits_config, Dataset(X=X.astype(np.float64), y=y.astype(np.int64), batches=())
    )
    rows = np.stack([s.x for s in synthetic_vibration(8, 0.01, seed=7, count=6000)])
    vibration_config = parse_config(tomllib.loads(ANOMALY_TOML))
    vibration = train_run(vibration_config, Dataset(X=rows.astype(np.float64), y=None, batches=()))
    out = {}
    for name, config, run, data in (
        ("digits MLP", digits_config, digits, X),
        ("vibration k-means", vibration_config, vibration, rows),
    ):
        out[name] = (run, _manifest(config, run), np.asarray(data, dtype=np.float32))
    return out


def _manifest(config: ModelConfig, run: RunResult) -> Manifest:
    """The manifest a device would install the model with (its threshold, its output)."""
    if run.tflite is None:
        raise ValueError(f"{config.model.name}: the run exported no model")
    manifest, _ = build_release(config, 1, run.tflite, plan_deltas(run.tflite, {}), run.record)
    return manifest


def _worker(python: str, args: list[str]) -> dict[str, Any]:
    """Run bench.inference_worker under `python`, this source tree first on its path."""
    env = {**os.environ, "PYTHONPATH": str(TREE)}
    done = subprocess.run(
        [python, "-m", "bench.inference_worker", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{python} bench.inference_worker failed: {done.stderr.strip()[-2000:]}")
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def _edge_figures(doc: dict[str, Any]) -> dict[str, Any]:
    seconds = doc["seconds"]
    limit, score = percentiles(seconds["interpreter"]), percentiles(seconds["score"])
    return {
        "backend": doc["backend"],
        "numpy": doc["numpy"],
        "interpreter_single": limit,
        "predict_single": percentiles(seconds["predict"]),
        "score_single": score,
        "score_over_interpreter_p50": round(score["p50_us"] / limit["p50_us"], 2),
        "batch_samples_per_s": doc["batch_samples_per_s"],
    }


def measure() -> dict[str, Any]:
    figures: dict[str, Any] = {"single_calls": SINGLE_CALLS, "models": {}}
    for name, (run, manifest, X) in _models().items():
        assert run.model is not None
        assert run.tflite is not None
        with tempfile.TemporaryDirectory() as tmp:
            files = Path(tmp)
            (files / "m.tflite").write_bytes(run.tflite)
            (files / "manifest.json").write_bytes(manifest.to_bytes())
            np.save(files / "x.npy", X[:1000])
            joblib.dump(run.model, files / "sklearn.joblib")
            sk = _worker(
                sys.executable,
                ["sklearn", str(files / "sklearn.joblib"), str(files / "x.npy"), str(SINGLE_CALLS)],
            )
            edges = {
                backend: _edge_figures(
                    _worker(
                        python,
                        [
                            "edge",
                            str(files / "m.tflite"),
                            str(files / "manifest.json"),
                            str(files / "x.npy"),
                            str(SINGLE_CALLS),
                        ],
                    )
                )
                for backend, python in interpreters("inference").items()
            }
        sk_p = percentiles(sk["seconds"]["sklearn"])
        lite = edges["ai_edge_litert"]
        entry: dict[str, Any] = {
            "model_bytes": len(run.tflite),
            "sklearn_single": sk_p,
            "backends": edges,
            "speedup_p50": round(sk_p["p50_us"] / lite["predict_single"]["p50_us"], 1),
            "speedup_p99": round(sk_p["p99_us"] / lite["predict_single"]["p99_us"], 1),
        }
        old = edges.get("tflite_runtime")
        if old is not None:
            entry["speedup_p50_tflite_runtime_214"] = round(
                sk_p["p50_us"] / old["predict_single"]["p50_us"], 1
            )
        figures["models"][name] = entry
        print(name, json.dumps(entry), flush=True)
    models = figures["models"].values()
    figures["min_speedup_p50"] = min(m["speedup_p50"] for m in models)
    figures["max_score_over_interpreter_p50"] = max(
        b["score_over_interpreter_p50"] for m in models for b in m["backends"].values()
    )
    figures["goal_overhead"] = GOAL_OVERHEAD
    figures["meets_goal"] = (
        figures["min_speedup_p50"] >= GOAL_SPEEDUP
        and figures["max_score_over_interpreter_p50"] <= GOAL_OVERHEAD
    )
    return figures


if __name__ == "__main__":
    print(json.dumps(measure(), indent=1)[:4000], file=sys.stderr)
