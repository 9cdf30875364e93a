"""The update worker: one refresh at a time, nudges coalesced, rate-limited, retried.

A refresh runs when the agent starts, when a nudge arrives (any message on
the device's nudge topics; what it says decides nothing), and on a timer, so
a device that missed every nudge, or whose CDN froze, still finds out. Nudges
that arrive while a refresh runs or within `min_interval` of the last one are
folded into the next refresh: a storm of messages costs the CDN one refresh
per device per interval. A refresh that failed on the CDN or the disk (a
RetryableUpdateError) is tried again after a jittered pause that doubles from
RETRY_MIN_SECONDS to RETRY_MAX_SECONDS, or at the next nudge, whichever comes
first. Refusals of a version are final for that version.

A nudge names the version it was sent for. If the refresh it caused found
another one, the metadata the device read was older than the nudge (a CDN
cache, a timestamp another writer was replacing), so the worker looks again,
a few times, FOLLOW_UP_SECONDS apart: never installing what the nudge says,
only asking the repository again, within the rate limit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from edge.backoff import Backoff
from edge.updater import Report, Updater
from edgeloop.contract import MalformedNudge, Nudge, Step

log = logging.getLogger(__name__)

RETRY_MIN_SECONDS = 5.0
RETRY_MAX_SECONDS = 600.0
FOLLOW_UP_SECONDS = 5.0
FOLLOW_UPS = 3


def describe_nudge(raw: bytes) -> str:
    """What a nudge says, for the log: never trusted, so never refused either."""
    if not raw:
        return "nudge"
    try:
        nudge = Nudge.from_bytes(raw)
    except MalformedNudge as exc:
        return f"nudge ({exc})"[:200]
    carrying = f", carrying {len(nudge.carried)} files" if nudge.carried else ""
    return f"nudge: {nudge.model} v{nudge.version}{carrying}"


def read_nudge(raw: bytes) -> Nudge | None:
    """The nudge, if it is one: its version is only ever a reason to look again, its
    files only copies for ngclient to verify."""
    try:
        return Nudge.from_bytes(raw)
    except MalformedNudge:
        return None


class UpdateWorker:
    def __init__(
        self,
        updater: Updater,
        report: Report,
        *,
        min_interval: float = 10.0,
        every: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._updater, self._report = updater, report
        self.min_interval, self.every = min_interval, every
        self._clock = clock
        self._nudge: str | None = None
        self._expected: int | None = None  # the version the pending nudge was sent for
        self._carried: dict[str, bytes] = {}  # the files the pending nudge brought
        self._ready = threading.Condition()
        self.refreshes = 0
        # Every nudge's bytes, carried files included: what the device received over
        # MQTT for its updates, beside what it fetched from the CDN.
        self.nudge_bytes = 0
        # The version named by the last nudge whose refresh has finished: what a caller
        # waits on to know a nudge is settled, for its refresh may find nothing new.
        self.answered: int | None = None

    def nudged(self, raw: bytes) -> None:
        """The link's callback: ask for a refresh; one pending nudge stands for all."""
        nudge = read_nudge(raw)
        with self._ready:
            self.nudge_bytes += len(raw)
            self._nudge = describe_nudge(raw)
            self._expected = None if nudge is None else nudge.version
            # The newest nudge's files stand for all: each was read after its publish.
            self._carried = {} if nudge is None else nudge.files
            self._ready.notify_all()

    def wake(self) -> None:
        with self._ready:
            self._ready.notify_all()

    def _next(self, stop: threading.Event, due: float) -> str | None:
        """Why to refresh next (a nudge, or `due` reached), or None once stopped."""
        with self._ready:
            while self._nudge is None and not stop.is_set():
                left = due - self._clock()
                if left <= 0:
                    return "timer"
                self._ready.wait(min(left, 0.5))
            return None if stop.is_set() else self._nudge

    def run(self, stop: threading.Event) -> None:
        backoff = Backoff(RETRY_MIN_SECONDS, RETRY_MAX_SECONDS)
        due = self._clock()  # at start: what does the pointer say now?
        last = float("-inf")
        expected: int | None = None  # what the last nudge was sent for
        follow_ups = 0
        while not stop.is_set():
            why = self._next(stop, due)
            if why is None:
                return
            pause = last + self.min_interval - self._clock()
            if pause > 0 and stop.wait(pause):
                return
            # Only the refresh a nudge caused uses its files: follow-ups, retries and the
            # timer ask the CDN, for they run because what was carried did not settle it.
            carried: dict[str, bytes] = {}
            answering = False
            with self._ready:
                if self._nudge is not None:
                    why, self._nudge = self._nudge, None
                    expected, self._expected, follow_ups = self._expected, None, 0
                    carried, self._carried = self._carried, {}
                    answering = True
            last = self._clock()
            self.refreshes += 1
            try:
                result = self._updater.handle(why, carried)
            except Exception as exc:
                # Whatever one refresh does, the next one must still run.
                log.exception("event=update_crashed")
                self._report(Step.FAILED, None, f"unexpected {type(exc).__name__}: {exc}")
                due = self._clock() + self.every
                continue
            finally:
                if answering:
                    self.answered = expected
            if result.retryable:
                due = self._clock() + backoff.next()
                continue
            backoff.reset()
            due = self._clock() + self.every
            if expected is not None and result.version != expected and follow_ups < FOLLOW_UPS:
                follow_ups += 1
                due = self._clock() + max(FOLLOW_UP_SECONDS, self.min_interval)
            else:
                expected = None
