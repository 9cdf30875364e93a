"""The training entry point as SageMaker runs it: a process over the /opt/ml layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_digits

from edge.uploads import encode_batch
from edgeloop.factory.config import ModelConfig
from edgeloop.factory.data import read_batch
from edgeloop.factory.handoff import RUN_ID, STREAM_ABOVE, config_hyperparameters
from edgeloop.factory.job import MEMORY_BYTES, ML_ROOT_ENV, JobOutcome, MlPaths
from edgeloop.factory.run import train_batches
from edgeloop.runtime import CompiledModel
from tests.factories import (
    digits_config,
    kmeans_config,
    planted_outliers,
    signal_config,
    signal_windows,
)


def _job_dir(root: Path, config: ModelConfig, uploads: dict[str, bytes], **extra: str) -> MlPaths:
    paths = MlPaths(root)
    paths.hyperparameters.parent.mkdir(parents=True)
    hyperparameters = {**config_hyperparameters(config), RUN_ID: "run-1", **extra}
    paths.hyperparameters.write_text(json.dumps(hyperparameters))
    for key, data in uploads.items():
        path = paths.channel("train") / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return paths


def _run(paths: MlPaths) -> subprocess.CompletedProcess[str]:
    """`python3 -m edgeloop.factory.job`, the image's alternate command, on this root."""
    return subprocess.run(
        [sys.executable, "-m", "edgeloop.factory.job", "train"],
        env={**os.environ, ML_ROOT_ENV: str(paths.root)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _digit_uploads(devices: int, rows: int) -> dict[str, bytes]:
    X, y = load_digits(return_X_y=True)
    return {
        f"data/digits/pump-{d}/{d:04d}.npz": encode_batch(
            X[d * rows : (d + 1) * rows].astype(np.float32), y[d * rows : (d + 1) * rows]
        )
        for d in range(devices)
    }


def test_a_job_trains_gates_and_exports_as_the_function_does(tmp_path: Path) -> None:
    config = digits_config(threshold=0.9)
    uploads = _digit_uploads(6, 250)
    paths = _job_dir(tmp_path / "ml", config, uploads)
    done = _run(paths)
    assert done.returncode == 0, done.stderr
    assert not paths.failure.exists()
    outcome = JobOutcome.read(paths.model)
    assert outcome.promoted
    assert outcome.record["run_id"] == "run-1"
    assert outcome.record["rows"] == 6 * 250
    assert outcome.tflite is not None
    trained = outcome.trained()
    assert trained is not None
    # The same factory code in this process, on the same uploads, decides the same.
    items = [read_batch(key, data, config) for key, data in sorted(uploads.items())]
    here = train_batches(config, items).result
    assert outcome.record["metrics"] == here.record["metrics"]
    assert outcome.record["gate"] == here.record["gate"]
    assert outcome.record["export"]["sha256"] == here.record["export"]["sha256"]
    # What it wrote runs in the device's interpreter.
    X = load_digits().data[:8]
    assert np.allclose(CompiledModel(outcome.tflite).predict(X), trained.outputs(X), atol=1e-4)


def test_a_job_warm_starts_from_the_champion_channel(tmp_path: Path) -> None:
    config = digits_config(threshold=0.9)
    first = _job_dir(tmp_path / "first", config, _digit_uploads(4, 250))
    assert _run(first).returncode == 0
    champion = JobOutcome.read(first.model).trained()
    second = _job_dir(tmp_path / "second", config, _digit_uploads(6, 250))
    (second.channel("champion")).mkdir(parents=True)
    joblib.dump(champion, second.channel("champion") / "estimator.joblib")
    assert _run(second).returncode == 0
    record = JobOutcome.read(second.model).record
    assert record["champion_metrics"]  # judged against the champion
    assert record["start"].startswith(("warm start", "cold start: a fit from scratch"))
    assert "cold_challenger" in record  # the warm start was tried: it had a champion


def test_kmeans_above_the_streaming_threshold_trains_chunk_by_chunk(tmp_path: Path) -> None:
    uploads = {}
    for d in range(4):
        X, _ = planted_outliers(3000, seed=d)
        uploads[f"data/vibration/pump-{d}/0001.npz"] = encode_batch(X.astype(np.float32), None)
    paths = _job_dir(tmp_path / "ml", kmeans_config(), uploads, **{STREAM_ABOVE: "1"})
    done = _run(paths)
    assert done.returncode == 0, done.stderr
    record = JobOutcome.read(paths.model).record
    assert record["streamed"]["rows"] == 12_000
    assert record["rows"] == 12_000


def test_a_job_without_uploads_fails_with_the_reason_where_sagemaker_reads_it(
    tmp_path: Path,
) -> None:
    paths = _job_dir(tmp_path / "ml", digits_config(), {})
    done = _run(paths)
    assert done.returncode == 1
    assert paths.failure.read_text() == "HandOffError: the train channel holds no uploads"
    assert not (paths.model / "record.json").exists()


@pytest.mark.parametrize(
    ("hyperparameters", "reason"),
    [
        ({}, "HandOffError: the hyperparameters carry no config.model"),
        ({"config.model": "{"}, "HandOffError: hyperparameter config.model is not JSON"),
    ],
)
def test_bad_hyperparameters_fail_the_job_with_their_reason(
    tmp_path: Path, hyperparameters: dict[str, str], reason: str
) -> None:
    paths = MlPaths(tmp_path / "ml")
    paths.hyperparameters.parent.mkdir(parents=True)
    paths.hyperparameters.write_text(json.dumps(hyperparameters))
    assert _run(paths).returncode == 1
    assert paths.failure.read_text().startswith(reason)


def test_a_classifier_above_the_streaming_threshold_trains_chunk_by_chunk(
    tmp_path: Path,
) -> None:
    config = digits_config("logistic_classifier", threshold=0.9)
    paths = _job_dir(tmp_path / "ml", config, _digit_uploads(6, 250), **{STREAM_ABOVE: "1"})
    done = _run(paths)
    assert done.returncode == 0, done.stderr
    outcome = JobOutcome.read(paths.model)
    assert outcome.record["streamed"]["rows"] == outcome.record["rows"] == 6 * 250
    assert outcome.promoted, outcome.record["gate"]
    assert outcome.tflite is not None
    trained = outcome.trained()
    assert trained is not None
    X = load_digits().data[:8]
    assert np.allclose(CompiledModel(outcome.tflite).predict(X), trained.outputs(X), atol=1e-4)


def test_a_model_that_cannot_stream_is_refused_when_it_would_not_fit_in_memory(
    tmp_path: Path,
) -> None:
    config = signal_config("mlp_classifier")
    X, modes = signal_windows(64, seed=3)
    uploads = {"data/pump/pump-0/0001.npz": encode_batch(X.astype(np.float32), modes)}
    extra = {STREAM_ABOVE: "1", MEMORY_BYTES: str(64 * 2**20)}
    paths = _job_dir(tmp_path / "ml", config, uploads, **extra)
    done = _run(paths)
    assert done.returncode == 1
    reason = paths.failure.read_text()
    assert reason.startswith("CannotStream: pump is fed raw windows ([signal] section)")
    assert "above the 64 MiB this instance has" in reason
    # With the memory it needs, the same run trains in memory as before.
    roomy = _job_dir(tmp_path / "roomy", config, uploads, **{STREAM_ABOVE: "1"})
    assert _run(roomy).returncode == 0
    assert "streamed" not in JobOutcome.read(roomy.model).record
