"""What a device sends on its events topic: an alarm, raised locally, sent up small."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from edgeloop.contract.encoding import utc_now
from edgeloop.contract.reader import Fields


class AlarmKind(StrEnum):
    ANOMALY = "anomaly"  # an anomaly detector's score over its threshold
    LOW_CONFIDENCE = "low_confidence"  # a classifier's top probability under the floor


class EventRejected(ValueError):
    """An events message that is not a valid alarm."""


@dataclass(frozen=True)
class AlarmEvent:
    model: str
    version: int
    kind: AlarmKind
    value: float
    # Milliseconds matter here: a burst of alarms is read in order.
    at: str

    @staticmethod
    def now(model: str, version: int, kind: AlarmKind, value: float) -> AlarmEvent:
        stamp = utc_now().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return AlarmEvent(model, version, kind, round(value, 6), stamp)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "kind": self.kind.value,
            "value": self.value,
            "at": self.at,
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    @staticmethod
    def from_json(doc: Any) -> AlarmEvent:
        f = Fields(doc, "event", EventRejected)
        return AlarmEvent(
            model=f.text("model", max_length=64),
            version=f.integer("version", low=1),
            kind=f.choice("kind", AlarmKind),
            value=f.number("value"),
            at=f.text("at", max_length=32),
        )
