"""Retrain at scale: k-means on up to 4M x 16 rows streamed from storage in chunks.

The rows are written as chunk files first (what a device fleet's uploads are);
then a fresh process trains on them with `fit_kmeans_streaming`, so its peak
RSS is the training's alone (with the interpreter and libraries it needs).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROWS = (100_000, 1_000_000, 4_000_000)
CHUNK = 250_000
WIDTH = 16
GOAL_SECONDS_1M = 60.0
GOAL_RSS_MB = 1024.0

_TRAIN = """
import json, resource, sys, time
from pathlib import Path
import numpy as np
from edgeloop.factory.config import parse_config
from edgeloop.factory.export import to_tflite
from edgeloop.factory.stream import fit_kmeans_streaming
folder = Path(sys.argv[1])
config = parse_config({
    "model": {"name": "plant", "kind": "kmeans_anomaly", "n_features": 16},
    "train": {"params": {"n_clusters": 6, "threshold_method": "mad", "mad_k": 6.0}},
    "gate": {"metric": "silhouette", "threshold": 0.3},
    "export": {"quantize": "int8"},
})
def chunks():
    for path in sorted(folder.glob("*.npy")):
        yield np.load(path)
start = time.perf_counter()
run = fit_kmeans_streaming(config, chunks)
seconds = time.perf_counter() - start
tflite = to_tflite(run.model, "int8")
print(json.dumps({"seconds": seconds, "rows": run.rows, "passes": run.passes,
                  "silhouette": run.metrics.get("silhouette"),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "model_bytes": len(tflite)}))
"""

_BASELINE = """
import resource
import numpy, sklearn.cluster, edgeloop.factory.stream
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def _write(folder: Path, rows: int) -> None:
    rng = np.random.default_rng(rows)
    modes = np.random.default_rng(0).normal(0.0, 6.0, size=(6, WIDTH))
    for i, start in enumerate(range(0, rows, CHUNK)):
        n = min(CHUNK, rows - start)
        X = modes[rng.integers(0, len(modes), n)] + rng.normal(0.0, 1.0, size=(n, WIDTH))
        odd = rng.random(n) < 0.01
        X[odd] = rng.uniform(-25, 25, size=(int(odd.sum()), WIDTH))
        np.save(folder / f"chunk-{i:04d}.npy", X.astype(np.float32))


def measure() -> dict[str, Any]:
    baseline = float(
        subprocess.run(
            [sys.executable, "-c", _BASELINE], capture_output=True, text=True, check=True
        ).stdout.split()[-1]
    )
    results: dict[str, Any] = {}
    for rows in ROWS:
        with tempfile.TemporaryDirectory() as tmp:
            _write(Path(tmp), rows)
            done = subprocess.run(
                [sys.executable, "-c", _TRAIN, tmp],
                capture_output=True,
                text=True,
                check=True,
                timeout=900,
            )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results[str(rows)] = {
            k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()
        }
        print(rows, json.dumps(results[str(rows)]), flush=True)
    one_m = results[str(1_000_000)]
    peaks = [r["peak_rss_mb"] for r in results.values()]
    return {
        "width": WIDTH,
        "chunk_rows": CHUNK,
        "libraries_rss_mb": round(baseline, 1),
        "runs": results,
        "rss_growth_4m_over_100k": round(peaks[-1] / peaks[0], 3),
        "meets_goal": one_m["seconds"] < GOAL_SECONDS_1M and max(peaks) < GOAL_RSS_MB,
    }


if __name__ == "__main__":
    print(json.dumps(measure(), indent=1))
