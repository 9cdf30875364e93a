"""Alarm events: one MQTT message per alarm, at most MAX_EVENTS_PER_SECOND.

A model that alarms on every sample must not flood the broker: past the cap
in any one second, alarms are counted as suppressed instead of sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from edge.counters import Counters
from edgeloop.contract import AlarmEvent, AlarmKind

MAX_EVENTS_PER_SECOND = 20


class AlarmEvents:
    def __init__(self, model: str, send: Callable[[bytes], None], counters: Counters) -> None:
        self._model, self._send, self._counters = model, send, counters
        self._window = (0.0, 0)  # (start of the current second, events sent in it)

    def raised(self, version: int, value: float, outputs: npt.NDArray[np.float32]) -> None:
        second, count = self._window
        now = time.monotonic()
        if now - second >= 1.0:
            second, count = now, 0
        if count >= MAX_EVENTS_PER_SECOND:
            self._counters.events_suppressed += 1
            self._window = (second, count)
            return
        self._window = (second, count + 1)
        kind = AlarmKind.ANOMALY if outputs.ndim == 1 else AlarmKind.LOW_CONFIDENCE
        self._send(AlarmEvent.now(self._model, version, kind, value).to_bytes())
        self._counters.events += 1
