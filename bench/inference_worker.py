"""One side of the inference benchmark, timed in a clean interpreter of its own.

    python -m bench.inference_worker edge MODEL.tflite MANIFEST.json X.npy CALLS
    python -m bench.inference_worker sklearn MODEL.joblib X.npy CALLS

`edge` times, call by call and alternating so drift hits all three alike, the
bare interpreter's set-tensor + invoke + get-tensor (the limit), edgeloop's
`CompiledModel.predict`, and its single-sample scoring path (`Scorer.score_one`:
the model, the finite check, the alarm), then batch throughput. `sklearn` times
the estimator's `predict` on one row with the same standardisation in front.
It prints one JSON line of raw seconds; the parent turns them into figures.

It imports neither scikit-learn (on the edge side) nor anything of the
benchmark's own, so it runs in the tflite-runtime 2.14 venv too, from this
source tree on its path.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

BATCH_ROWS = (1, 64, 1024)
WARM_UP = 200


def _interleaved(
    calls: dict[str, Callable[[npt.NDArray[np.float32]], object]],
    X: npt.NDArray[Any],
    count: int,
) -> dict[str, list[float]]:
    rows = [X[i % len(X)][None, :] for i in range(count)]
    for row in rows[:WARM_UP]:
        for call in calls.values():
            call(row)
    out: dict[str, list[float]] = {name: [] for name in calls}
    clock = time.perf_counter
    for row in rows:
        for name, call in calls.items():
            start = clock()
            call(row)
            out[name].append(clock() - start)
    return out


def edge(model_path: Path, manifest_path: Path, X: npt.NDArray[np.float32], count: int) -> Any:
    from edge.scoring import LoadedModel, Scorer
    from edgeloop.contract import Manifest
    from edgeloop.runtime import CompiledModel

    model = CompiledModel(model_path.read_bytes())
    scorer = Scorer(0.6)
    scorer.swap(LoadedModel(Manifest.from_json(json.loads(manifest_path.read_text())), model))
    # The bare interpreter: its own, over the same bytes, as its backend builds it.
    bare = CompiledModel(model_path.read_bytes())._interpreter
    i = bare.get_input_details()[0]["index"]
    o = bare.get_output_details()[0]["index"]

    def limit(x: npt.NDArray[np.float32]) -> object:
        bare.set_tensor(i, x)
        bare.invoke()
        return bare.get_tensor(o)

    seconds = _interleaved(
        {"interpreter": limit, "predict": model.predict, "score": scorer.score_one}, X, count
    )
    batches = {}
    for rows in BATCH_ROWS:
        block = np.resize(X, (rows, X.shape[1]))
        model.predict(block)
        reps = max(3, 20000 // rows)
        start = time.perf_counter()
        for _ in range(reps):
            model.predict(block)
        batches[str(rows)] = round(rows * reps / (time.perf_counter() - start))
    return {
        "backend": model.backend,
        "numpy": np.__version__,
        "seconds": seconds,
        "batch_samples_per_s": batches,
    }


def sklearn(model_path: Path, X: npt.NDArray[np.float32], count: int) -> Any:
    import joblib

    trained = joblib.load(model_path)
    est = trained.estimator
    if trained.kind == "kmeans_anomaly":

        def one(x: npt.NDArray[np.float32]) -> object:
            return est.transform(trained.scaled(x.astype(np.float64))).min(axis=1)
    else:

        def one(x: npt.NDArray[np.float32]) -> object:
            return est.predict(trained.scaled(x.astype(np.float64)))

    return {"numpy": np.__version__, "seconds": _interleaved({"sklearn": one}, X, count)}


def main(argv: list[str]) -> int:
    side, *paths, count = argv
    if side == "edge" and len(paths) == 3:
        doc = edge(Path(paths[0]), Path(paths[1]), np.load(paths[2]), int(count))
    elif side == "sklearn" and len(paths) == 2:
        doc = sklearn(Path(paths[0]), np.load(paths[1]), int(count))
    else:
        raise SystemExit(f"usage: {__doc__.strip().splitlines()[2].strip()} (or sklearn ...)")
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
