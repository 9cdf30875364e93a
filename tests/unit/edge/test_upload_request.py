"""The running version's signed request for more data reaches the upload policy."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt
import pytest

from edge.alarms import AlarmEvents
from edge.config import UploadSection, WatchSection
from edge.counters import Counters
from edge.drift import DriftWindow
from edge.local_scoring import LocalScoring
from edge.scoring import LoadedModel, Scorer
from edge.sources import Sample
from edge.store import ModelStore
from edge.upload_policy import UploadPolicy
from edge.uploads import UploadQueue
from edge.watch import SwapGuard
from edgeloop.contract import TensorSpec
from edgeloop.runtime import CompiledModel
from tests.conftest import make_manifest


class _Confident:
    """A classifier sure of every sample: nothing is an alarm, so only the share goes up."""

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        return np.asarray([[0.9, 0.05, 0.05]], dtype=np.float32)


def _uploaded(tmp_path: Path, requested: float | None) -> int:
    manifest = replace(
        make_manifest(),
        output=TensorSpec(shape=(-1, 3)),
        decision_threshold=None,
        upload_sample_rate=requested,
    )
    scorer = Scorer(0.6)
    scorer.swap(LoadedModel(manifest, cast(CompiledModel, _Confident())))
    counters = Counters()
    queue = UploadQueue(tmp_path / f"queue-{requested}", 64)
    uploads = UploadPolicy(UploadSection(batch_rows=100, sample_rate=0.05), queue, counters, 3)
    guard = SwapGuard(scorer, ModelStore(tmp_path / f"store-{requested}"), WatchSection(), _ignore)
    scoring = LocalScoring(
        scorer, guard, AlarmEvents("m", lambda _: None, counters), DriftWindow(), uploads, counters
    )
    for _ in range(2000):
        scoring.process(Sample(np.zeros(8, dtype=np.float32)))
    assert counters.alarms == 0
    return counters.uploaded_rows_with_model


def _ignore(*_: object) -> None:
    pass


def test_a_version_that_asks_for_half_its_samples_gets_about_half(tmp_path: Path) -> None:
    own = _uploaded(tmp_path, None)
    asked = _uploaded(tmp_path, 0.5)
    # 2,000 confident samples: the device's 5% is about 100 rows, the version's 50% about 1,000.
    assert 50 < own < 160
    assert 900 < asked < 1100


def test_the_end_of_the_source_is_said_with_the_samples_scored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scorer = Scorer(0.6)
    counters = Counters()
    queue = UploadQueue(tmp_path / "queue", 8)
    uploads = UploadPolicy(UploadSection(batch_rows=100), queue, counters, 3)
    guard = SwapGuard(scorer, ModelStore(tmp_path / "store"), WatchSection(), _ignore)
    scoring = LocalScoring(
        scorer, guard, AlarmEvents("m", lambda _: None, counters), DriftWindow(), uploads, counters
    )
    samples = [Sample(np.zeros(8, dtype=np.float32)) for _ in range(3)]
    with caplog.at_level(logging.INFO, logger="edge.local_scoring"):
        scoring.run(samples, 0.0, threading.Event())
    assert "event=source_ended scored=3" in caplog.text
