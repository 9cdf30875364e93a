"""Every exported model also runs in tflite-runtime 2.14 under NumPy 1.x.

tflite-runtime 2.14 is the last release and what many deployed Pi images run.
`make test` builds its own venv (.venv-tflite214) and passes its interpreter in
EDGELOOP_TFLITE214_PYTHON.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeloop.factory.data import Dataset
from edgeloop.factory.run import FEATURE_TOLERANCE, train_run
from edgeloop.factory.signal import error_floors, extract, relative_errors
from edgeloop.factory.signal_graph import features_tflite
from edgeloop.runtime import CompiledModel
from tests.factories import (
    as_dataset,
    digits_config,
    digits_share,
    kmeans_config,
    planted_outliers,
    signal_config,
    signal_windows,
)

ROOT = Path(__file__).resolve().parents[3]
_SCRIPT = """
import json, sys
import numpy as np
from edgeloop.runtime import CompiledModel
X = np.load(sys.argv[1])
out = {}
for path in sys.argv[2:]:
    model = CompiledModel(open(path, "rb").read())
    np.save(path + ".out.npy", model.predict(X))
    out[path] = model.backend
print(json.dumps({"numpy": np.__version__, "backends": out}))
"""


def _python() -> str:
    python = os.environ.get("EDGELOOP_TFLITE214_PYTHON")
    if not python:
        pytest.fail("EDGELOOP_TFLITE214_PYTHON is not set; run the tests through `make test`")
    return python


@pytest.mark.parametrize("kind", ["digits", "kmeans", "signal"])
def test_exported_models_load_and_agree_in_tflite_runtime_2_14(kind: str, tmp_path: Path) -> None:
    python = _python()
    if kind == "digits":
        X = digits_share(0.3).X
        results = [
            train_run(digits_config(k, threshold=0.5, quantize=q), digits_share(0.7))
            for k in ("mlp_classifier", "logistic_classifier")
            for q in ("none", "int8")
        ]
    elif kind == "signal":
        # Raw windows in: the features are ops of the graph (signal_graph).
        X, _ = signal_windows(200, seed=9, outlier_share=0.05)
        data, modes = signal_windows(800, seed=10)
        results = [train_run(signal_config(quantize=q), as_dataset(data)) for q in ("none", "int8")]
        results += [
            train_run(signal_config(k), Dataset(X=data, y=modes, batches=()))
            for k in ("mlp_classifier", "logistic_classifier")
        ]
    else:
        X, _ = planted_outliers(300, seed=9)
        data, _ = planted_outliers(2000, seed=10)
        results = [train_run(kmeans_config(quantize=q), as_dataset(data)) for q in ("none", "int8")]
    np.save(tmp_path / "x.npy", X.astype(np.float32))
    paths = []
    for i, result in enumerate(results):
        assert result.tflite is not None
        model_file = tmp_path / f"m{i}.tflite"
        model_file.write_bytes(result.tflite)
        paths.append(str(model_file))
    run = subprocess.run(
        [python, "-c", _SCRIPT, str(tmp_path / "x.npy"), *paths],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["numpy"].startswith("1.")
    assert set(report["backends"].values()) == {"tflite_runtime"}
    for model_path in paths:
        theirs = np.load(model_path + ".out.npy")
        ours = CompiledModel(Path(model_path).read_bytes()).predict(X)
        assert ours.shape == theirs.shape
        if kind == "signal":
            # The two runtimes sum a window's samples in different orders; a feature
            # off by a few float32 ulps moves a standardised score by more than the
            # 1e-5 the feature-vector models keep, and well within the export check's
            # 1e-4 relative.
            assert np.max(np.abs(ours - theirs) / np.maximum(np.abs(ours), 1.0)) <= 1e-4
        else:
            assert np.max(np.abs(ours - theirs)) <= 1e-5


def test_signal_features_agree_with_numpy_in_tflite_runtime_2_14(tmp_path: Path) -> None:
    python = _python()
    signal = signal_config().signal
    assert signal is not None
    X, _ = signal_windows(300, seed=11, outlier_share=0.05)
    np.save(tmp_path / "x.npy", X.astype(np.float32))
    (tmp_path / "f.tflite").write_bytes(features_tflite(signal))
    run = subprocess.run(
        [python, "-c", _SCRIPT, str(tmp_path / "x.npy"), str(tmp_path / "f.tflite")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    got = np.load(tmp_path / "f.tflite.out.npy").astype(np.float64)
    errors = relative_errors(got, extract(signal, X), error_floors(signal, X))
    assert errors.max() <= FEATURE_TOLERANCE
