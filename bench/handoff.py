"""The hand-off path on one machine: the training entry point over an /opt/ml layout.

    python -m bench.handoff              # writes bench/results/handoff.json
    python -m bench.handoff --big        # also 10M x 64 classifiers and 50M x 16 k-means
                                         # (about 45 minutes on 2 cores)

For each dataset, uploads are written as a training job's `train` channel would
hold them (one .npz per device and batch, at their keys), the config as
hyperparameters, and a fresh process runs `python -m edgeloop.factory.job` over
it, so its peak RSS is the job's alone. Recorded: wall time, peak RSS, the run's
decision and metric, the hand-off estimate the retrain function would have made,
and what the same wall time would cost on the stack's default instance.

`--big` runs the issue's sizes (bench/handoff_big.py, results in
bench/results/handoff_big.json): classifiers on 2.5M and
10M rows of 64 features and k-means on 12.5M and 50M rows of 16, all streamed,
each compared with an in-memory fit on a subsample. The small rows run first in
the same process, so both sets share the machine's state.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import write_result
from bench.readme import rewrite_readme
from edge.uploads import encode_batch
from edgeloop.factory.config import ModelConfig, parse_config
from edgeloop.factory.handoff import RUN_ID, STREAM_ABOVE, config_hyperparameters, estimate_run
from edgeloop.factory.job import ML_ROOT_ENV, JobOutcome, MlPaths
from edgeloop.factory.stream import trains_streamed

# ml.m5.4xlarge training, us-east-1, on demand: about $0.922 per hour as third-party
# tables quote https://aws.amazon.com/sagemaker/pricing/ (read 2026-12-06; not
# confirmed from a stored copy of the AWS page).
INSTANCE = "ml.m5.4xlarge"
USD_PER_HOUR = 0.922
DEVICES = 8
BATCH_ROWS = 125_000
STREAM_ABOVE_BYTES = 256 * 1024 * 1024

# Runs the entry point as its image command does, then reports this process's peak RSS:
# VmHWM, its own address space's high-water mark. Not getrusage's ru_maxrss, which
# Linux carries across exec from the parent: a child of a 600 MB benchmark process
# would report at least 600 MB whatever it used.
_RUN = """
import json, runpy, sys
try:
    runpy.run_module("edgeloop.factory.job", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as done:
    code = int(done.code or 0)
with open("/proc/self/status") as status:
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"exit": code, "peak_rss_mb": hwm / 1024}))
"""


def kmeans() -> ModelConfig:
    return parse_config(
        {
            "model": {"name": "plant", "kind": "kmeans_anomaly", "n_features": 16},
            "train": {"params": {"n_clusters": 6, "threshold_method": "mad", "mad_k": 6.0}},
            "gate": {"metric": "silhouette", "threshold": 0.3},
        }
    )


def classifier(kind: str = "logistic_classifier") -> ModelConfig:
    params: dict[str, Any] = (
        {"max_iter": 200} if kind == "logistic_classifier" else {"hidden_layer_sizes": [32]}
    )
    return parse_config(
        {
            "model": {"name": "parts", "kind": kind, "n_features": 64},
            "train": {"params": params},
            "gate": {"metric": "accuracy", "threshold": 0.8},
        }
    )


def rows_of(width: int, rows: int, seed: int, spread: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """`rows` rows around six fixed centres (sd `spread` apart, unit noise), with labels."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(7).normal(0.0, spread, size=(6, width))
    label = rng.integers(0, 6, rows)
    X = (centers[label] + rng.normal(0.0, 1.0, size=(rows, width))).astype(np.float32)
    return X, label.astype(np.int64)


def _write_channel(
    paths: MlPaths, config: ModelConfig, rows: int, spread: float = 6.0
) -> tuple[int, int, int]:
    """Uploads of `rows` rows in all, spread over DEVICES devices, generated one upload
    at a time: their decoded bytes, their bytes as stored, and the largest one's."""
    rng = np.random.default_rng(rows)
    width = config.model.n_features
    centers = np.random.default_rng(7).normal(0.0, spread, size=(6, width))
    decoded = wire = largest = 0
    for batch in range(rows // BATCH_ROWS):
        label = rng.integers(0, 6, BATCH_ROWS)
        X = (centers[label] + rng.normal(0.0, 1.0, size=(BATCH_ROWS, width))).astype(np.float32)
        y = label.astype(np.int64) if config.is_classifier else None
        key = f"data/{config.model.name}/dev-{batch % DEVICES}/{batch:06d}.npz"
        path = paths.channel("train") / key
        path.parent.mkdir(parents=True, exist_ok=True)
        data = encode_batch(X, y)
        path.write_bytes(data)
        size = BATCH_ROWS * (width + (1 if y is not None else 0)) * 8
        decoded, wire, largest = decoded + size, wire + len(data), max(largest, size)
    return decoded, wire, largest


def one(
    config: ModelConfig,
    rows: int,
    spread: float = 6.0,
    judge: Any = None,
) -> dict[str, Any]:
    """The entry point as a process over `rows` rows; `judge(outcome)` adds figures."""
    with tempfile.TemporaryDirectory(prefix="edgeloop-handoff-") as tmp:
        paths = MlPaths(Path(tmp))
        paths.hyperparameters.parent.mkdir(parents=True)
        paths.hyperparameters.write_text(
            json.dumps(
                {
                    **config_hyperparameters(config),
                    RUN_ID: "bench",
                    STREAM_ABOVE: str(STREAM_ABOVE_BYTES),
                }
            )
        )
        decoded, wire, largest = _write_channel(paths, config, rows, spread)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _RUN],
            env={ML_ROOT_ENV: tmp, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - start
        report = json.loads(done.stdout.strip().splitlines()[-1])
        outcome = JobOutcome.read(paths.model) if report["exit"] == 0 else None
        streams = trains_streamed(config, wire, STREAM_ABOVE_BYTES)
        estimate = estimate_run(config, decoded, streamed=streams, largest_upload=largest)
        record = outcome.record if outcome is not None else {}
        extra = judge(outcome) if judge is not None and outcome is not None else {}
        return {
            "kind": config.model.kind,
            "rows": rows,
            "width": config.model.n_features,
            "decoded_mb": round(decoded / 2**20, 1),
            "seconds": round(seconds, 1),
            "peak_rss_mb": round(report["peak_rss_mb"], 1),
            "exit": report["exit"],
            "failure": paths.failure.read_text() if paths.failure.exists() else None,
            "streamed": "streamed" in record,
            "stored_mb": round(wire / 2**20, 1),
            "decision": record.get("gate", {}).get("decision"),
            "metric": record.get("metrics", {}).get(config.gate.metric),
            "estimate": estimate.to_json(),
            "instance": INSTANCE,
            "usd_at_this_wall_time": round(seconds / 3600 * USD_PER_HOUR, 4),
            **({"passes": record["streamed"]["passes"]} if "streamed" in record else {}),
            **extra,
        }


def measure() -> dict[str, Any]:
    runs = []
    for config, rows in (
        (kmeans(), 1_000_000),
        (kmeans(), 5_000_000),
        (classifier(), 500_000),
        (classifier("mlp_classifier"), 250_000),
    ):
        runs.append(one(config, rows))
        print(json.dumps(runs[-1]), flush=True)
    return {
        "runs": runs,
        "price": {
            "instance": INSTANCE,
            "usd_per_hour": USD_PER_HOUR,
            "source": "third-party tables quoting https://aws.amazon.com/sagemaker/pricing/ "
            "(us-east-1, on demand), read 2026-12-06; not confirmed from the AWS page",
        },
        "note": "the job's process on this machine, not an ml.m5.4xlarge; a job also pays "
        "its instance's start-up and channel download, not measured here",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--big", action="store_true", help="also the issue's sizes (long)")
    args = parser.parse_args()
    print(write_result("handoff", measure()))
    if args.big:
        from bench import handoff_big

        handoff_big.measure()
    rewrite_readme()
