"""Which samples go to the cloud: all of them until a model runs, then alarms and a sample.

Chosen rows are batched and each full batch is written to the disk queue,
from which the uploader sends it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from edge.config import UploadSection
from edge.counters import Counters
from edge.sources import Sample
from edge.uploads import UploadQueue, encode_batch

log = logging.getLogger(__name__)


class UploadPolicy:
    """Thread-safe: the scoring thread adds rows, the agent's batch timer sends a
    partial batch that waited too long, and stop flushes what is left."""

    def __init__(
        self,
        settings: UploadSection,
        queue: UploadQueue,
        counters: Counters,
        seed: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings, self._queue, self._counters = settings, queue, counters
        self._rng = random.Random(seed)
        self._clock = clock
        self._lock = threading.Lock()
        self._rows: list[npt.NDArray[np.float32]] = []
        self._labels: list[int | None] = []
        self._first_at = 0.0
        self._told = False
        self._requested: float | None = None

    def share(self, requested: float | None) -> float:
        """The share of non-alarm samples uploaded once a model runs: the device's own,
        or what the running version asks for, within the owner's ceiling."""
        s = self._settings
        wanted = s.sample_rate if requested is None else max(s.sample_rate, requested)
        return min(wanted, s.max_sample_rate)

    def consider(
        self, sample: Sample, has_model: bool, alarm: bool, requested: float | None = None
    ) -> None:
        # Without a model every row is training data; with one, alarms and a share.
        if has_model:
            if requested != self._requested:
                self._requested = requested
                self._say_share(requested)
            if not alarm and self._rng.random() >= self.share(requested):
                return
        with self._lock:
            if self._rows and self._rows[0].shape != sample.x.shape:
                # A signal model with another window: a batch holds rows of one width.
                self._flush_locked()
            if not self._rows:
                self._first_at = self._clock()
            self._rows.append(sample.x)
            self._labels.append(sample.label)
            if has_model:
                self._counters.uploaded_rows_with_model += 1
            else:
                self._counters.uploaded_rows_without_model += 1
            if len(self._rows) >= self._settings.batch_rows:
                self._flush_locked()
            elif not self._told:
                # Said once, so a device fed a few rows is not taken for a silent one.
                self._told = True
                log.info(
                    "event=upload_buffering rows=%d batch_rows=%d max_wait_seconds=%g: rows "
                    "are kept until a batch is full or its oldest row has waited "
                    "max_wait_seconds, then uploaded",
                    len(self._rows),
                    self._settings.batch_rows,
                    self._settings.max_wait_seconds,
                )

    def _say_share(self, requested: float | None) -> None:
        s = self._settings
        if requested is None:
            log.info("event=upload_share sample_rate=%g source=device", s.sample_rate)
            return
        log.info(
            "event=upload_share sample_rate=%g source=version requested=%g device=%g "
            "ceiling=%g: the running version is under its goal and asks for more data",
            self.share(requested),
            requested,
            s.sample_rate,
            s.max_sample_rate,
        )

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def flush_if_waited(self) -> bool:
        """Send a partial batch whose oldest row waited `max_wait_seconds`."""
        with self._lock:
            if not self._rows:
                return False
            if self._clock() - self._first_at < self._settings.max_wait_seconds:
                return False
            rows = len(self._rows)
            self._flush_locked()
        log.info("event=upload_partial_batch rows=%d reason=max_wait_seconds", rows)
        return True

    def run(self, stop: threading.Event) -> None:
        """The batch timer: checks often enough that a batch waits at most a few
        percent longer than max_wait_seconds."""
        tick = min(5.0, max(0.05, self._settings.max_wait_seconds / 20))
        while not stop.wait(tick):
            self.flush_if_waited()

    def _flush_locked(self) -> None:
        if not self._rows:
            return
        X = np.stack(self._rows).astype(np.float32)
        labelled = all(label is not None for label in self._labels)
        y = np.asarray(self._labels, dtype=np.int64) if labelled else None
        self._rows, self._labels = [], []
        self._queue.put(encode_batch(X, y))
        self._counters.batches_queued += 1
