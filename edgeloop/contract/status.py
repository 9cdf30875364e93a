"""What a device reports on its status topic, and what the cloud records of it."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeloop.contract.topics import check_model_name

HEALTH = ("healthy", "degraded", "failed", "no_model")
# The update state machine's steps, in order, plus its two ends.
STEPS = (
    "idle",
    "received",
    "verified",
    "downloading",
    "patching",
    "checking",
    "swapped",
    "persisted",
    "succeeded",
    "failed",
    "rolled_back",
    "already_installed",
)
MAX_STATUS_BYTES = 16 * 1024


class StatusRejected(ValueError):
    """A status message that is not a valid report; it is dropped, never recorded."""


@dataclass(frozen=True)
class StatusReport:
    model: str
    version: int | None  # the version serving now; None before the first model
    health: str
    step: str = "idle"
    ring: str = "all"
    target_version: int | None = None  # the version the latest update was about
    detail: str = ""
    queue_depth: int = 0
    dropped_batches: int = 0
    drift: dict[str, float] = field(default_factory=dict)
    sent_at: str = ""

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @staticmethod
    def from_json(doc: Any) -> StatusReport:
        if not isinstance(doc, dict):
            raise StatusRejected("status must be a JSON object")

        def optional_int(key: str) -> int | None:
            value = doc.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise StatusRejected(f"status.{key} must be a non-negative integer or null")
            return value

        def text(key: str, allowed: tuple[str, ...] | None = None, default: str = "") -> str:
            value = doc.get(key, default)
            if not isinstance(value, str) or len(value) > 1024:
                raise StatusRejected(f"status.{key} must be a string of at most 1024 characters")
            if allowed is not None and value not in allowed:
                raise StatusRejected(f"status.{key} {value!r} is not one of {', '.join(allowed)}")
            return value

        model = text("model")
        try:
            check_model_name(model)
        except ValueError as exc:
            raise StatusRejected(f"status.model: {exc}") from exc
        drift = doc.get("drift", {})
        if not isinstance(drift, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in drift.values()
        ):
            raise StatusRejected("status.drift must be an object of finite numbers")
        return StatusReport(
            model=model,
            version=optional_int("version"),
            health=text("health", HEALTH),
            step=text("step", STEPS, "idle"),
            ring=text("ring", ("canary", "all"), "all"),
            target_version=optional_int("target_version"),
            detail=text("detail"),
            queue_depth=optional_int("queue_depth") or 0,
            dropped_batches=optional_int("dropped_batches") or 0,
            drift={str(k): float(v) for k, v in drift.items()},
            sent_at=text("sent_at"),
        )

    @staticmethod
    def from_bytes(raw: bytes) -> StatusReport:
        if len(raw) > MAX_STATUS_BYTES:
            raise StatusRejected(f"status is {len(raw)} bytes, over {MAX_STATUS_BYTES}")
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StatusRejected(f"status is not JSON: {exc}") from exc
        return StatusReport.from_json(doc)
