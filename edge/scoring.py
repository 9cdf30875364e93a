"""Local scoring, and the swap that replaces the model without stopping it.

One thread scores. The updater prepares a new model in its own thread and
hands it over with `swap`: a reference change under a lock held for
microseconds. The scoring thread reads the reference under the same lock and
runs the interpreter outside it, so a sample never waits for an update, and an
interpreter is only ever run by one thread at a time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.errors import HealthCheckFailed
from edge.probe import compare
from edgeloop.contract import HealthCheck, Manifest
from edgeloop.runtime import CompiledModel


@dataclass
class LoadedModel:
    manifest: Manifest
    runtime: CompiledModel

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def is_anomaly_detector(self) -> bool:
        return len(self.manifest.output.shape) == 1


@dataclass(frozen=True)
class Scored:
    outputs: npt.NDArray[np.float32]
    alarms: npt.NDArray[np.bool_]
    version: int


def run_health_checks(runtime: CompiledModel, checks: tuple[HealthCheck, ...]) -> None:
    for i, check in enumerate(checks):
        got = runtime.predict(np.asarray(check.inputs, dtype=np.float32)).reshape(
            len(check.inputs), -1
        )
        want = np.asarray(check.expected, dtype=np.float64).reshape(len(check.expected), -1)
        reason = compare(i, got, want, check.tolerance)
        if reason:
            raise HealthCheckFailed(reason)


class Scorer:
    def __init__(self, low_confidence: float) -> None:
        self._lock = threading.Lock()
        self._model: LoadedModel | None = None
        self._low_confidence = low_confidence

    @property
    def model(self) -> LoadedModel | None:
        with self._lock:
            return self._model

    def swap(self, model: LoadedModel | None) -> LoadedModel | None:
        """Install `model` for the next sample; returns the one it replaced."""
        with self._lock:
            previous, self._model = self._model, model
        return previous

    def score(self, x: npt.NDArray[np.float32]) -> Scored | None:
        """Score a batch with whatever model is current; None while there is none."""
        with self._lock:
            model = self._model
        if model is None:
            return None
        outputs = model.runtime.predict(x)
        if not np.all(np.isfinite(outputs)):
            raise FloatingPointError(f"model v{model.version} produced NaN or inf")
        if model.is_anomaly_detector:
            threshold = model.manifest.decision_threshold
            alarms = outputs > (threshold if threshold is not None else np.inf)
        else:
            alarms = outputs.max(axis=1) < self._low_confidence
        return Scored(outputs, np.asarray(alarms, dtype=bool), model.version)
