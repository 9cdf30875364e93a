"""What a device reports on its status topic, and what the cloud records of it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from edgeloop.contract.encoding import format_time, utc_now
from edgeloop.contract.reader import Fields
from edgeloop.contract.topics import check_model_name

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

    @property
    def terminal(self) -> bool:
        """An update's outcome: the steps the device reports to the cloud at once.

        The steps in between go to the agent's log only; the cloud hears them in
        the next report (a change of health or version, or the keep-alive), if at all.
        """
        return self in (Step.SUCCEEDED, Step.FAILED, Step.ROLLED_BACK)


class StatusRejected(ValueError):
    """A status message that is not a valid report; it is dropped, never recorded."""


@dataclass(frozen=True)
class StatusReport:
    model: str
    version: int | None  # the version serving now; None before the first model
    health: Health
    step: Step = Step.IDLE
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
        # Unknown keys are refused: a report that names its own rollout stage or
        # ring is not one this cloud reads, and must not look as if it counted.
        f = Fields(doc, "status", StatusRejected, known=_FIELDS)
        return StatusReport(
            model=f.checked("model", f.text("model", max_length=64), check_model_name),
            version=f.optional_integer("version"),
            health=f.choice("health", Health),
            step=f.choice("step", Step, Step.IDLE),
            target_version=f.optional_integer("target_version"),
            detail=f.any_text("detail", "", max_length=1024),
            queue_depth=f.optional_integer("queue_depth") or 0,
            dropped_batches=f.optional_integer("dropped_batches") or 0,
            drift=f.numbers("drift", {}),
            sent_at=f.any_text("sent_at", "", max_length=32),
        )

    @property
    def outcome(self) -> str | None:
        """What a terminal report says of `target_version`: installed or failed."""
        if not self.step.terminal or self.target_version is None:
            return None
        return "failed" if self.step.failed else "installed"

    @staticmethod
    def from_bytes(raw: bytes) -> StatusReport:
        if len(raw) > MAX_STATUS_BYTES:
            raise StatusRejected(f"status is {len(raw)} bytes, over {MAX_STATUS_BYTES}")
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise StatusRejected(f"status is not JSON: {str(exc)[:80]}") from exc
        return StatusReport.from_json(doc)


_FIELDS = frozenset(f.name for f in fields(StatusReport))
