"""A device with fewer rows than a batch says once that it is buffering, not silence."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edge.config import UploadSection
from edge.counters import Counters
from edge.sources import Sample
from edge.upload_policy import UploadPolicy
from edge.uploads import UploadQueue


def test_buffering_is_logged_once_with_rows_and_batch_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = UploadQueue(tmp_path / "queue", 8)
    policy = UploadPolicy(UploadSection(batch_rows=5), queue, Counters(), seed=1)
    sample = Sample(np.zeros(3, dtype=np.float32))
    with caplog.at_level(logging.INFO, logger="edge.upload_policy"):
        for _ in range(3):
            policy.consider(sample, has_model=False, alarm=False)
    said = [r.getMessage() for r in caplog.records if "upload_buffering" in r.getMessage()]
    assert len(said) == 1
    assert "rows=1 batch_rows=5" in said[0]
    assert len(queue) == 0
    for _ in range(2):
        policy.consider(sample, has_model=False, alarm=False)
    assert len(queue) == 1
