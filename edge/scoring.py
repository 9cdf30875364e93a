"""Local scoring, and the swap that replaces the model without stopping it.

One thread scores. The updater prepares a new model in its own thread and
hands it over with `swap`: a reference change under a lock held for
microseconds (so two swaps each return the model they replaced). The scoring
thread reads the reference once per sample, without the lock: reading one
attribute is atomic in Python, and the lock cost as much as the finite check
and the alarm together. It runs the interpreter on what it read, so a sample
never waits for an update, and an interpreter is only ever run by one thread at
a time.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

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
    # Read once, not per sample: the scoring path stays near the interpreter's own cost.
    version: int = field(init=False)
    is_anomaly_detector: bool = field(init=False)
    alarm_above: float = field(init=False)

    def __post_init__(self) -> None:
        self.version = self.manifest.version
        self.is_anomaly_detector = len(self.manifest.output.shape) == 1
        threshold = self.manifest.decision_threshold
        # As float32, the outputs' type: comparing in float64 would move the boundary
        # for a threshold float32 cannot hold exactly.
        self.alarm_above = math.inf if threshold is None else float(np.float32(threshold))


@dataclass(frozen=True)
class Scored:
    outputs: npt.NDArray[np.float32]
    alarms: npt.NDArray[np.bool_]
    version: int


# One sample's result: (value, alarm, version, outputs): the score an alarm is judged
# on (an anomaly score, or a classifier's top probability), the alarm, the version
# that scored it and the raw output. A plain tuple: a NamedTuple's constructor alone
# cost a sixth of the interpreter's invoke.
ScoredSample = tuple[float, bool, int, npt.NDArray[np.float32]]


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
        self._low_confidence_f32 = float(np.float32(low_confidence))

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
            alarms = outputs > model.alarm_above
        else:
            alarms = outputs.max(axis=1) < self._low_confidence
        return Scored(outputs, np.asarray(alarms, dtype=bool), model.version)

    def score_one(self, x: npt.NDArray[np.float32]) -> ScoredSample | None:
        """Score one sample (a row of shape (1, n)); None while there is no model.

        The same decisions as `score`, on Python floats: for a row of a few values,
        NumPy's per-call overhead would cost more than the interpreter itself."""
        model = self._model
        if model is None:
            return None
        outputs = model.runtime.predict(x)
        values = outputs.tolist()
        row: list[float] = values if model.is_anomaly_detector else values[0]
        # A sum of float32 values cannot overflow a float64: it is finite iff every
        # value is.
        if not math.isfinite(sum(row)):
            raise FloatingPointError(f"model v{model.version} produced NaN or inf")
        if model.is_anomaly_detector:
            value = row[0]
            return value, value > model.alarm_above, model.version, outputs
        value = max(row)
        return value, value < self._low_confidence_f32, model.version, outputs
