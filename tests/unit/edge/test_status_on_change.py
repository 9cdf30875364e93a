"""The agent reports its status when the fleet view of it changes, and once per keep-alive."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from edge.drift import DriftWindow
from edge.scoring import LoadedModel, Scorer
from edge.status import StatusBoard
from edge.uploads import UploadQueue
from edgeloop.contract import Step
from tests.support_world import wait_for

DAY = 86_400.0


class Serving(Scorer):
    """A scorer that says which version it serves, without loading one."""

    def __init__(self) -> None:
        super().__init__(0.6)
        self.serving: int | None = None

    @property
    def model(self) -> LoadedModel | None:
        if self.serving is None:
            return None
        return cast(LoadedModel, SimpleNamespace(version=self.serving))


def board(tmp_path: Path, scorer: Scorer | None = None) -> tuple[StatusBoard, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []
    status = StatusBoard(
        "vibration",
        scorer or Scorer(0.6),
        UploadQueue(tmp_path / "uploads", 4),
        DriftWindow(),
        lambda payload: sent.append(json.loads(payload)),
    )
    return status, sent


def test_nothing_changed_sends_nothing_until_the_keep_alive_is_due(tmp_path: Path) -> None:
    status, sent = board(tmp_path)
    status.publish()  # on connect
    assert not status.tick(keepalive=DAY)
    assert not status.tick(keepalive=DAY)
    assert len(sent) == 1
    assert status.tick(keepalive=0.0)  # the keep-alive: due, though nothing changed
    assert len(sent) == 2


def test_a_health_change_is_reported_once(tmp_path: Path) -> None:
    scorer = Serving()
    scorer.serving = 1
    status, sent = board(tmp_path, scorer)
    status.publish()
    assert sent[-1]["health"] == "healthy"
    status.record(Step.FAILED, 2, "refresh failed")  # an outcome: published at once
    assert sent[-1]["health"] == "degraded"
    # The next refresh finds nothing new: not an outcome, so record() does not
    # publish, but the device is no longer degraded, and the view must say so.
    status.record(Step.RECEIVED, None, "")
    status.record(Step.ALREADY_INSTALLED, 1, "")
    assert len(sent) == 2
    assert status.tick(keepalive=DAY)
    assert sent[-1]["health"] == "healthy"
    assert sent[-1]["step"] == "already_installed"
    assert not status.tick(keepalive=DAY)
    assert len(sent) == 3


def test_a_version_change_is_reported(tmp_path: Path) -> None:
    scorer = Serving()
    status, sent = board(tmp_path, scorer)
    status.publish()
    scorer.serving = 4  # e.g. the previous version restored after a rollback
    assert status.tick(keepalive=DAY)
    assert sent[-1]["version"] == 4
    assert not status.tick(keepalive=DAY)


def test_an_update_on_its_way_is_reported_once_by_its_outcome(tmp_path: Path) -> None:
    scorer = Serving()
    scorer.serving = 2
    status, sent = board(tmp_path, scorer)
    status.publish()
    for step in (Step.RECEIVED, Step.VERIFIED, Step.DOWNLOADING, Step.CHECKING, Step.SWAPPED):
        if step == Step.SWAPPED:
            scorer.serving = 3  # the version changes before the outcome is published
        status.record(step, 3, "")
        assert not status.tick(keepalive=DAY)
    assert len(sent) == 1
    status.record(Step.SUCCEEDED, 3, "")
    assert [(s["version"], s["step"]) for s in sent] == [(2, "idle"), (3, "succeeded")]
    assert not status.tick(keepalive=DAY)


def test_the_timer_reports_a_change_within_its_check(tmp_path: Path) -> None:
    status, sent = board(tmp_path)
    status.publish()
    stop = threading.Event()
    timer = threading.Thread(target=status.run, args=(DAY, 0.02, stop), daemon=True)
    timer.start()
    try:
        status.fail("the source is gone")
        wait_for(lambda: len(sent) >= 2, what="the failure reported")
        status.fault = None  # as if it healed without a report of its own
        wait_for(lambda: sent[-1]["health"] == "no_model", what="the recovery reported")
    finally:
        stop.set()
        timer.join(5)
    assert [s["health"] for s in sent] == ["no_model", "failed", "no_model"]


def test_a_report_that_could_not_be_sent_is_tried_again(tmp_path: Path) -> None:
    status, sent = board(tmp_path)
    status.publish()
    failing = [True]
    send = status._send

    def flaky(payload: bytes) -> None:
        if failing[0]:
            raise ConnectionError("the link refused it")
        send(payload)

    status._send = flaky
    with pytest.raises(ConnectionError):
        status.fail("the source is gone")  # the report did not go
    failing[0] = False
    assert status.tick(keepalive=DAY)
    assert sent[-1]["health"] == "failed"
