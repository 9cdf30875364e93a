"""What a device reports on its status topic, and what the cloud records of it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from edgeloop.contract.encoding import format_time, utc_now
from edgeloop.contract.reader import Fields
from edgeloop.contract.topics import Ring, check_model_name

MAX_STATUS_BYTES = 16 * 1024


class Health(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILED = "failed"
    NO_MODEL = "no_model"


class Step(StrEnum):
    """The update state machine's steps, in order, then its ends."""

    IDLE = "idle"
    RECEIVED = "received"
    VERIFIED = "verified"
    DOWNLOADING = "downloading"
    PATCHING = "patching"
    CHECKING = "checking"
    SWAPPED = "swapped"
    PERSISTED = "persisted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    ALREADY_INSTALLED = "already_installed"

    @property
    def failed(self) -> bool:
        """An update that ended without the version running: what aborts a rollout."""
        return self in (Step.FAILED, Step.ROLLED_BACK)


class StatusRejected(ValueError):
    """A status message that is not a valid report; it is dropped, never recorded."""


@dataclass(frozen=True)
class StatusReport:
    model: str
    version: int | None  # the version serving now; None before the first model
    health: Health
    step: Step = Step.IDLE
    ring: Ring = Ring.ALL
    target_version: int | None = None  # the version the latest update was about
    detail: str = ""
    queue_depth: int = 0
    dropped_batches: int = 0
    drift: dict[str, float] = field(default_factory=dict)
    sent_at: str = field(default_factory=lambda: format_time(utc_now()))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    @staticmethod
    def from_json(doc: Any) -> StatusReport:
        f = Fields(doc, "status", StatusRejected)
        return StatusReport(
            model=f.checked("model", f.text("model", max_length=64), check_model_name),
            version=f.optional_integer("version"),
            health=f.choice("health", Health),
            step=f.choice("step", Step, Step.IDLE),
            ring=f.choice("ring", Ring, Ring.ALL),
            target_version=f.optional_integer("target_version"),
            detail=f.any_text("detail", "", max_length=1024),
            queue_depth=f.optional_integer("queue_depth") or 0,
            dropped_batches=f.optional_integer("dropped_batches") or 0,
            drift=f.numbers("drift", {}),
            sent_at=f.any_text("sent_at", "", max_length=32),
        )

    @staticmethod
    def from_bytes(raw: bytes) -> StatusReport:
        if len(raw) > MAX_STATUS_BYTES:
            raise StatusRejected(f"status is {len(raw)} bytes, over {MAX_STATUS_BYTES}")
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise StatusRejected(f"status is not JSON: {str(exc)[:80]}") from exc
        return StatusReport.from_json(doc)
