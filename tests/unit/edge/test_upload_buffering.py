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


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_partial_batch_goes_once_its_oldest_row_has_waited_max_wait_seconds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = UploadQueue(tmp_path / "queue", 8)
    clock = _Clock()
    settings = UploadSection(batch_rows=100, max_wait_seconds=60.0)
    policy = UploadPolicy(settings, queue, Counters(), seed=1, clock=clock)
    sample = Sample(np.zeros(3, dtype=np.float32))
    assert not policy.flush_if_waited()  # nothing buffered: nothing sent
    policy.consider(sample, has_model=False, alarm=False)
    clock.now += 30.0
    policy.consider(sample, has_model=False, alarm=False)
    clock.now += 29.0
    assert not policy.flush_if_waited()
    assert len(queue) == 0
    clock.now += 1.0  # the first row has now waited 60 s
    with caplog.at_level(logging.INFO, logger="edge.upload_policy"):
        assert policy.flush_if_waited()
    assert len(queue) == 1
    assert any("upload_partial_batch rows=2" in r.getMessage() for r in caplog.records)
    # The next batch's clock starts at its own first row.
    policy.consider(sample, has_model=False, alarm=False)
    clock.now += 59.0
    assert not policy.flush_if_waited()


def _uploaded_with_model(share_requested: float | None, settings: UploadSection) -> int:
    counters = Counters()
    policy = UploadPolicy(settings, _NullQueue(), counters, seed=7)
    sample = Sample(np.zeros(3, dtype=np.float32))
    for _ in range(4000):
        policy.consider(sample, has_model=True, alarm=False, requested=share_requested)
    return counters.uploaded_rows_with_model


class _NullQueue(UploadQueue):
    def __init__(self) -> None:
        self.batches = 0

    def put(self, data: bytes) -> None:
        self.batches += 1


def test_a_version_under_its_goal_raises_the_share_within_the_owners_ceiling() -> None:
    own = UploadSection(batch_rows=50, sample_rate=0.05)
    base = _uploaded_with_model(None, own)
    asked = _uploaded_with_model(0.5, own)
    capped = _uploaded_with_model(
        0.5, UploadSection(batch_rows=50, sample_rate=0.05, max_sample_rate=0.2)
    )
    # 4,000 draws: 5% is about 200 rows, 50% about 2,000, 20% about 800.
    assert 120 < base < 300
    assert 1800 < asked < 2200
    assert 650 < capped < 950
    # A version never lowers what the owner set.
    assert _uploaded_with_model(0.01, own) == base


def test_the_share_in_use_is_logged_when_it_changes(caplog: pytest.LogCaptureFixture) -> None:
    policy = UploadPolicy(UploadSection(), _NullQueue(), Counters(), seed=1)
    sample = Sample(np.zeros(3, dtype=np.float32))
    with caplog.at_level(logging.INFO, logger="edge.upload_policy"):
        for requested in (0.5, 0.5, None, None):
            policy.consider(sample, has_model=True, alarm=False, requested=requested)
    said = [r.getMessage() for r in caplog.records if "upload_share" in r.getMessage()]
    assert len(said) == 2
    assert "sample_rate=0.5 source=version" in said[0]
    assert "sample_rate=0.05 source=device" in said[1]
