"""What the device says about itself: the update step it is at, its health, its drift.

Every update step is recorded here and logged. An update's outcome (installed,
failed, rolled back) is published at once: that is what the cloud counts toward
a rollout. Otherwise the report goes when what the fleet view shows of the
device changes (its health or the version it runs), found on a short tick, and
once per keep-alive interval (weekly by default) whatever happened. The steps in
between an update's start and its outcome stay in the log: one update costs the
cloud one message, not one per step. Whether the device is connected at all is
the broker's to say (its lifecycle events), not a timer's here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from edge.drift import DriftWindow
from edge.scoring import Scorer
from edge.sources import SkippedLines
from edge.uploads import UploadQueue
from edge.windowing import WindowCounts
from edgeloop.contract import Health, StatusReport, Step

log = logging.getLogger(__name__)

# Steps after which the running version may have changed (the demo plots them).
_ENDS = (Step.SUCCEEDED, Step.FAILED, Step.ALREADY_INSTALLED, Step.SWAPPED)
# Where every refresh ends. In between, the version changes at the swap before the
# outcome is published: a change seen then would be a second message per update.
_SETTLED = (Step.IDLE, Step.ALREADY_INSTALLED, Step.SUCCEEDED, Step.FAILED, Step.ROLLED_BACK)


class StatusBoard:
    def __init__(
        self,
        model: str,
        scorer: Scorer,
        queue: UploadQueue,
        drift: DriftWindow,
        send: Callable[[bytes], None],
    ) -> None:
        self._model, self._scorer = model, scorer
        self._queue, self._drift, self._send = queue, drift, send
        self.step = Step.IDLE
        self.target_version: int | None = None
        self.detail = ""
        self.versions_seen: list[tuple[float, int | None]] = []
        # Why the agent halted; reported as `failed` health until the process exits.
        self.fault: str | None = None
        self.skipped: SkippedLines | None = None
        self.windows: WindowCounts | None = None
        # What the fleet view last heard: a change to it is worth a message.
        self._sent: tuple[Health, int | None] | None = None
        self._sent_at = float("-inf")
        self._lock = threading.Lock()

    @property
    def version(self) -> int | None:
        model = self._scorer.model
        return model.version if model is not None else None

    def record(self, step: Step, version: int | None, detail: str) -> None:
        """An update step: remembered for every later report, logged; an outcome published now."""
        self.step, self.target_version, self.detail = Step(step), version, detail
        _log_step(self.step, version, detail)
        if step in _ENDS:
            self.note_version()
        if self.step.terminal:
            self.publish()

    def note_version(self) -> None:
        self.versions_seen.append((time.time(), self.version))

    def fail(self, reason: str) -> None:
        self.fault = reason
        self.publish()

    def report(self) -> StatusReport:
        version = self.version
        detail = self.detail
        if self.skipped is not None and self.skipped.count:
            detail += f" | source skipped {self.skipped.count} lines, last: {self.skipped.last}"
        windowing = self.windows.summary() if self.windows is not None else ""
        if windowing:
            detail += f" | {windowing}"
        if self.fault is not None:
            health, detail = Health.FAILED, f"agent halted: {self.fault}"
        elif version is None:
            health = Health.NO_MODEL
        elif self.step.failed:
            health = Health.DEGRADED
        else:
            health = Health.HEALTHY
        return StatusReport(
            model=self._model,
            version=version,
            health=health,
            step=self.step,
            target_version=self.target_version,
            detail=detail[:1024],
            queue_depth=len(self._queue),
            dropped_batches=self._queue.dropped,
            drift=self._drift.figures(self._scorer.model),
        )

    def publish(self) -> None:
        report = self.report()
        self._send(report.to_bytes())
        # Noted once handed over: a send that raised leaves the change to the next tick.
        with self._lock:
            self._sent, self._sent_at = (report.health, report.version), time.monotonic()

    def changed(self) -> bool:
        """Whether the health or version the cloud last heard differs from now, once no
        update is half done."""
        report = self.report()
        if report.step not in _SETTLED and self.fault is None:
            return False
        with self._lock:
            return self._sent != (report.health, report.version)

    def tick(self, keepalive: float) -> bool:
        """Publish when the view changed or the keep-alive is due; whether it published."""
        with self._lock:
            due = time.monotonic() - self._sent_at >= keepalive
        if not (due or self.changed()):
            return False
        self.publish()
        return True

    def run(self, keepalive: float, check: float, stop: threading.Event) -> None:
        # At most one report per check: a health that flaps costs one message per
        # tick, not one per flap.
        while not stop.wait(min(check, keepalive)):
            try:
                self.tick(keepalive)
            except Exception:  # a report lost is not worth the timer: the next one goes
                log.exception("event=status_failed")


# How each update step reads in the log: one line per lifecycle event, the
# intermediate steps only at debug.
_EVENTS = {
    Step.RECEIVED: (logging.INFO, "update_received"),
    Step.VERIFIED: (logging.INFO, "update_verified"),
    Step.SUCCEEDED: (logging.INFO, "update_installed"),
    Step.ALREADY_INSTALLED: (logging.INFO, "update_already_installed"),
    Step.FAILED: (logging.WARNING, "update_refused"),
    Step.ROLLED_BACK: (logging.WARNING, "rollback"),
}


def _log_step(step: Step, version: int | None, detail: str) -> None:
    level, event = _EVENTS.get(step, (logging.DEBUG, f"update_{step.value}"))
    if not log.isEnabledFor(level):
        return
    fields = f"event={event}"
    if version is not None:
        fields += f" version={version}"
    if detail:
        key = "reason" if step in (Step.FAILED, Step.ROLLED_BACK) else "detail"
        fields += f" {key}={detail[:300]!r}"
    log.log(level, fields)
