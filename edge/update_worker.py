"""The update worker: one update at a time, the newest announcement wins, failures retried.

A retained announcement is delivered once per subscription, so an update that
failed on the CDN or the disk (a RetryableUpdateError) is tried again by the
agent itself after a jittered pause that doubles from RETRY_MIN_SECONDS to
RETRY_MAX_SECONDS, unless a newer announcement arrives first. Refusals of the
manifest or the model are final.
"""

from __future__ import annotations

import logging
import threading

from edge.backoff import Backoff
from edge.updater import Report, Updater
from edgeloop.contract import Step

log = logging.getLogger(__name__)

RETRY_MIN_SECONDS = 5.0
RETRY_MAX_SECONDS = 600.0


class UpdateWorker:
    def __init__(self, updater: Updater, report: Report) -> None:
        self._updater, self._report = updater, report
        self._pending: bytes | None = None
        self._ready = threading.Condition()

    def announced(self, raw: bytes) -> None:
        """The link's callback: a newer announcement replaces one not yet started."""
        with self._ready:
            self._pending = raw
            self._ready.notify_all()

    def wake(self) -> None:
        with self._ready:
            self._ready.notify_all()

    def _next(self, stop: threading.Event) -> bytes | None:
        with self._ready:
            while self._pending is None and not stop.is_set():
                self._ready.wait(0.5)
            raw, self._pending = self._pending, None
            return raw

    def run(self, stop: threading.Event) -> None:
        backoff = Backoff(RETRY_MIN_SECONDS, RETRY_MAX_SECONDS)
        while not stop.is_set():
            raw = self._next(stop)
            if raw is None:
                continue
            try:
                result = self._updater.handle(raw)
            except Exception as exc:
                # Whatever one announcement does, the next one must still be handled.
                log.exception("event=update_crashed")
                self._report(Step.FAILED, None, f"unexpected {type(exc).__name__}: {exc}")
                continue
            if not result.retryable:
                backoff.reset()
                continue
            if stop.wait(backoff.next()):
                return
            with self._ready:
                if self._pending is None:
                    self._pending = raw
