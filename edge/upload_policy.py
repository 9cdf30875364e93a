"""Which samples go to the cloud: all of them until a model runs, then alarms and a sample.

Chosen rows are batched and each full batch is written to the disk queue,
from which the uploader sends it.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import numpy.typing as npt

from edge.config import UploadSection
from edge.counters import Counters
from edge.sources import Sample
from edge.uploads import UploadQueue, encode_batch

log = logging.getLogger(__name__)


class UploadPolicy:
    def __init__(
        self, settings: UploadSection, queue: UploadQueue, counters: Counters, seed: int
    ) -> None:
        self._settings, self._queue, self._counters = settings, queue, counters
        self._rng = random.Random(seed)
        self._rows: list[npt.NDArray[np.float32]] = []
        self._labels: list[int | None] = []
        self._told = False

    def consider(self, sample: Sample, has_model: bool, alarm: bool) -> None:
        # Without a model every row is training data; with one, alarms and a random sample.
        if has_model and not alarm and self._rng.random() >= self._settings.sample_rate:
            return
        if self._rows and self._rows[0].shape != sample.x.shape:
            # A signal model with another window: a batch holds rows of one width.
            self.flush()
        self._rows.append(sample.x)
        self._labels.append(sample.label)
        if has_model:
            self._counters.uploaded_rows_with_model += 1
        else:
            self._counters.uploaded_rows_without_model += 1
        if len(self._rows) >= self._settings.batch_rows:
            self.flush()
        elif not self._told:
            # Nothing is sent until a batch is full: said once, so a device fed a few
            # rows is not taken for a silent one.
            self._told = True
            log.info(
                "event=upload_buffering rows=%d batch_rows=%d: rows are kept until a batch "
                "of %d is full (or the agent stops), then uploaded",
                len(self._rows),
                self._settings.batch_rows,
                self._settings.batch_rows,
            )

    def flush(self) -> None:
        if not self._rows:
            return
        X = np.stack(self._rows).astype(np.float32)
        labelled = all(label is not None for label in self._labels)
        y = np.asarray(self._labels, dtype=np.int64) if labelled else None
        self._rows, self._labels = [], []
        self._queue.put(encode_batch(X, y))
        self._counters.batches_queued += 1
