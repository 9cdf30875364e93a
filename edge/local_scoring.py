"""Local scoring: each sample scored, its alarm raised, the swap guard told, uploads chosen.

`run` is the scoring thread: it paces the source at the configured rate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from edge.alarms import AlarmEvents
from edge.counters import Counters
from edge.drift import DriftWindow
from edge.scoring import Scorer
from edge.sources import Sample
from edge.upload_policy import UploadPolicy
from edge.watch import SwapGuard

log = logging.getLogger(__name__)


class LocalScoring:
    def __init__(
        self,
        scorer: Scorer,
        guard: SwapGuard,
        alarms: AlarmEvents,
        drift: DriftWindow,
        uploads: UploadPolicy,
        counters: Counters,
    ) -> None:
        self._scorer, self._guard, self._alarms = scorer, guard, alarms
        self._drift, self._uploads, self._counters = drift, uploads, counters

    def process(self, sample: Sample) -> bool:
        """Score one sample, raise its alarm, apply the upload policy. Returns the alarm."""
        watch = self._guard.watching()
        try:
            scored = self._scorer.score_one(sample.x.reshape(1, -1))
        except (FloatingPointError, ValueError, RuntimeError) as exc:
            self._counters.scoring_errors += 1
            self._guard.failed(watch, exc)
            scored = None
        self._counters.scored += 1
        if scored is None:
            self._counters.scored_without_model += 1
        alarm = False
        requested = None
        if scored is not None:
            value, alarm, version, outputs = scored
            self._drift.add(value)
            if alarm:
                self._counters.alarms += 1
                self._alarms.raised(version, value, outputs)
            self._guard.scored(watch, version, alarm)
            model = self._scorer.model
            requested = None if model is None else model.manifest.upload_sample_rate
        self._uploads.consider(
            sample, has_model=scored is not None, alarm=alarm, requested=requested
        )
        return alarm

    def run(self, source: Iterable[Sample], rate: float, stop: threading.Event) -> None:
        interval = 1.0 / rate if rate > 0 else 0.0
        next_at = time.monotonic()
        for sample in source:
            if stop.is_set():
                return
            try:
                self.process(sample)
            except Exception as exc:
                # One sample (a full disk under the upload queue, a bug) must not end scoring.
                self._counters.sample_errors += 1
                if self._counters.sample_errors == 1 or self._counters.sample_errors % 1000 == 0:
                    log.warning(
                        "event=sample_failed count=%d error=%r",
                        self._counters.sample_errors,
                        f"{type(exc).__name__}: {exc}",
                    )
            if interval:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
        if not stop.is_set():
            # A piped file has ended: said, so whoever fed it knows every line was read.
            # The agent stays up: updates, uploads and status go on.
            log.info(
                "event=source_ended scored=%d: the source has no more samples; the agent "
                "keeps running (updates, uploads, status) until it is stopped",
                self._counters.scored,
            )
