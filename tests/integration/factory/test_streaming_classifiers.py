"""Classifiers trained chunk by chunk (partial_fit), for data larger than memory."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.datasets import load_digits

from edgeloop.factory import stream
from edgeloop.factory.data import Dataset
from edgeloop.factory.run import train_run, train_run_streamed
from edgeloop.factory.stream import (
    CannotStream,
    fit_classifier_streaming,
    streaming_refusal,
    trains_streamed,
)
from edgeloop.factory.training import NotEnoughData, split
from edgeloop.runtime import CompiledModel
from tests.factories import digits_config, signal_config

CHUNK = 300


class Source:
    """Digits as uploads of CHUNK rows, counting every chunk read."""

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        self.X, self.y, self.reads, self.passes = X, y, 0, 0

    @property
    def chunks_per_pass(self) -> int:
        return -(-len(self.X) // CHUNK)

    def __call__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        self.passes += 1
        for start in range(0, len(self.X), CHUNK):
            self.reads += 1
            yield self.X[start : start + CHUNK].astype(np.float32), self.y[start : start + CHUNK]


def _digits() -> Source:
    X, y = load_digits(return_X_y=True)
    return Source(X, y)


@pytest.mark.parametrize("kind", ["logistic_classifier", "mlp_classifier"])
def test_a_streamed_classifier_passes_the_gate_and_exports_like_an_in_memory_one(
    kind: str,
) -> None:
    config = digits_config(kind, threshold=0.9)
    source = _digits()
    streamed = train_run_streamed(config, source)
    assert streamed.promoted, streamed.record["gate"]
    assert streamed.record["export"]["check"]["ok"]
    assert streamed.tflite is not None
    assert streamed.model is not None
    assert streamed.record["streamed"]["rows"] == len(source.X)
    # The exported graph takes and gives what an in-memory fit's does.
    in_memory = train_run(config, Dataset(X=source.X, y=source.y, batches=()))
    assert in_memory.tflite is not None
    assert in_memory.model is not None
    rows = source.X[:16]
    ours = CompiledModel(streamed.tflite).predict(rows)
    theirs = CompiledModel(in_memory.tflite).predict(rows)
    assert ours.shape == theirs.shape == (16, 10)
    assert type(streamed.model.estimator) is type(in_memory.model.estimator)
    assert np.allclose(ours, streamed.model.outputs(rows), atol=1e-4)


def test_streaming_reads_the_data_in_chunks_a_fixed_number_of_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A held-out sample far smaller than the held-out rows: memory does not grow with them.
    monkeypatch.setattr(stream, "CLASSIFIER_HOLDOUT_SAMPLE", 50)
    source = _digits()
    run = fit_classifier_streaming(digits_config("logistic_classifier"), source, epochs=3)
    assert source.passes == run.passes == 4  # statistics, then three of partial_fit
    assert source.reads == 4 * source.chunks_per_pass
    assert len(run.held_rows) == 50
    assert run.holdout_rows > 300
    assert run.rows == len(source.X)


def test_the_held_out_rows_are_the_in_memory_split_s() -> None:
    config = digits_config("logistic_classifier")
    source = _digits()
    run = fit_classifier_streaming(config, source, epochs=2)
    parts = split(Dataset(X=source.X, y=source.y, batches=()), config)
    assert run.holdout_rows == len(parts.X_holdout)
    assert run.train_rows == len(parts.X_train)
    # The scaler is the in-memory one: every training row, not the first chunks.
    assert np.allclose(run.model.mean, parts.X_train.mean(axis=0))
    assert np.allclose(
        run.model.scale[parts.X_train.std(axis=0) > 1e-12],
        parts.X_train.std(axis=0)[parts.X_train.std(axis=0) > 1e-12],
    )


def test_a_model_fed_raw_windows_cannot_stream_and_says_why() -> None:
    config = signal_config("mlp_classifier")
    reason = streaming_refusal(config)
    assert reason is not None
    assert "[signal] section" in reason
    assert not trains_streamed(config, 10 * 2**30, 256 * 2**20)
    with pytest.raises(CannotStream, match="signal features"):
        fit_classifier_streaming(config, _digits())
    assert streaming_refusal(digits_config("mlp_classifier")) is None


def test_streaming_refuses_too_few_rows_and_one_class() -> None:
    X, y = load_digits(return_X_y=True)
    with pytest.raises(NotEnoughData, match="training rows"):
        fit_classifier_streaming(digits_config(), Source(X[:5], y[:5]))
    config = digits_config().model_copy(
        update={"model": digits_config().model.model_copy(update={"classes": ()})}
    )
    with pytest.raises(NotEnoughData, match="class"):
        fit_classifier_streaming(config, Source(X[y == 3], y[y == 3]))
