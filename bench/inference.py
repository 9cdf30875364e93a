"""On-device inference against scikit-learn, on the same trained models.

Single-sample latency is what a device scoring a live stream pays per reading:
edgeloop's edge runtime (`edgeloop.runtime.CompiledModel` over LiteRT, and over
tflite-runtime 2.14 under NumPy 1.x in its own interpreter) against the
scikit-learn estimator's `predict` on one row, with the same standardisation in
front. Calls alternate between the two, so drift on a shared machine hits both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits

from bench.common import percentiles
from edge.sources import synthetic_vibration
from edgeloop.demo.scenarios import ANOMALY_TOML
from edgeloop.factory.config import parse_config
from edgeloop.factory.data import Dataset
from edgeloop.factory.run import train_run
from edgeloop.factory.training import TrainedModel
from edgeloop.runtime import CompiledModel

SINGLE_CALLS = 5000
BATCH_ROWS = (1, 64, 1024)
GOAL_SPEEDUP = 20.0
DIGITS_TOML = (Path(__file__).parents[1] / "models" / "digits.toml").read_text()

# Run inside the tflite-runtime 2.14 venv: same timing loop, no scikit-learn there.
_TFLITE214 = """
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from edgeloop.runtime import CompiledModel
model = CompiledModel(open(sys.argv[2], "rb").read())
X = np.load(sys.argv[3])
out = []
for i in range(int(sys.argv[4])):
    x = X[i % len(X)]
    t = time.perf_counter(); model.predict(x); out.append(time.perf_counter() - t)
print(json.dumps({"backend": model.backend, "numpy": np.__version__, "seconds": out}))
"""


def _models() -> dict[str, tuple[TrainedModel, bytes, np.ndarray]]:
    X, y = load_digits(return_X_y=True)
    digits = train_run(
        parse_config(tomllib.loads(DIGITS_TOML)),
        Dataset(X=X.astype(np.float64), y=y.astype(np.int64), batches=()),
    )
    rows = np.stack([s.x for s in synthetic_vibration(8, 0.01, seed=7, count=6000)])
    vibration = train_run(
        parse_config(tomllib.loads(ANOMALY_TOML)),
        Dataset(X=rows.astype(np.float64), y=None, batches=()),
    )
    out = {}
    for name, run, data in (("digits MLP", digits, X), ("vibration k-means", vibration, rows)):
        assert run.model is not None
        assert run.tflite is not None
        out[name] = (run.model, run.tflite, np.asarray(data, dtype=np.float32))
    return out


def _sklearn_one(model: TrainedModel) -> Any:
    est = model.estimator
    if model.kind == "kmeans_anomaly":
        return lambda x: est.transform(model.scaled(x[None, :])).min(axis=1)
    return lambda x: est.predict(model.scaled(x[None, :]))


def _tflite214(tflite: bytes, X: np.ndarray) -> dict[str, Any] | None:
    python = os.environ.get("EDGELOOP_TFLITE214_PYTHON")
    if not python:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "m.tflite").write_bytes(tflite)
        np.save(Path(tmp) / "x.npy", X[:1000])
        done = subprocess.run(
            [
                python,
                "-c",
                _TFLITE214,
                str(Path(__file__).parents[1]),
                str(Path(tmp) / "m.tflite"),
                str(Path(tmp) / "x.npy"),
                str(SINGLE_CALLS),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure() -> dict[str, Any]:
    figures: dict[str, Any] = {"single_calls": SINGLE_CALLS, "models": {}}
    for name, (model, tflite, X) in _models().items():
        edge = CompiledModel(tflite)
        sk = _sklearn_one(model)
        for i in range(200):  # warm both up
            edge.predict(X[i]), sk(X[i].astype(np.float64))
        t_edge, t_sk = [], []
        for i in range(SINGLE_CALLS):
            x = X[i % len(X)]
            x64 = x.astype(np.float64)
            t = time.perf_counter()
            edge.predict(x)
            t_edge.append(time.perf_counter() - t)
            t = time.perf_counter()
            sk(x64)
            t_sk.append(time.perf_counter() - t)
        edge_p, sk_p = percentiles(t_edge), percentiles(t_sk)
        entry: dict[str, Any] = {
            "model_bytes": len(tflite),
            "edge_backend": edge.backend,
            "edge_single": edge_p,
            "sklearn_single": sk_p,
            "speedup_p50": round(sk_p["p50_us"] / edge_p["p50_us"], 1),
            "speedup_p99": round(sk_p["p99_us"] / edge_p["p99_us"], 1),
        }
        old = _tflite214(tflite, X)
        if old is not None:
            p = percentiles(old["seconds"])
            entry["tflite_runtime_214_single"] = {**p, "numpy": old["numpy"]}
            entry["speedup_p50_tflite_runtime_214"] = round(sk_p["p50_us"] / p["p50_us"], 1)
        batches = {}
        for rows in BATCH_ROWS:
            block = np.resize(X, (rows, X.shape[1]))
            edge.predict(block)
            reps = max(3, 20000 // rows)
            start = time.perf_counter()
            for _ in range(reps):
                edge.predict(block)
            batches[str(rows)] = round(rows * reps / (time.perf_counter() - start))
        entry["edge_batch_samples_per_s"] = batches
        figures["models"][name] = entry
        print(name, json.dumps(entry), flush=True)
    speedups = [m["speedup_p50"] for m in figures["models"].values()]
    figures["min_speedup_p50"] = min(speedups)
    figures["meets_goal"] = min(speedups) >= GOAL_SPEEDUP
    return figures


if __name__ == "__main__":
    print(json.dumps(measure(), indent=1)[:2000], file=sys.stderr)
