"""The update worker: it retries what the hierarchy calls retryable, and nothing else;
nudges are coalesced and rate-limited."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping
from typing import ClassVar

import pytest

from edge.backoff import Backoff
from edge.errors import (
    DownloadFailed,
    HealthCheckFailed,
    ManifestRefused,
    RetryableUpdateError,
    StagingFailed,
    TrustRefused,
    UpdateError,
    UpdateRefused,
)
from edge.update_worker import (
    FOLLOW_UP_SECONDS,
    FOLLOW_UPS,
    RETRY_MAX_SECONDS,
    UpdateWorker,
)
from edge.updater import UpdateResult
from edgeloop.contract import CarriedFile, HashMismatch, Nudge, Step


class Stop(threading.Event):
    """The worker's stop event; its pauses are recorded instead of slept."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.pauses.append(timeout)
        return self.is_set()


class ScriptedUpdater:
    """Answers each refresh with the next scripted error (None: success); stops the
    worker when the script is played out. `during` runs inside each refresh (a nudge
    arriving meanwhile)."""

    def __init__(self, errors: list[UpdateError | None], stop: Stop) -> None:
        self.errors, self.stop = errors, stop
        self.handled: list[str] = []
        self.carried: list[dict[str, bytes]] = []
        self.during: Callable[[], None] = lambda: None

    def handle(self, why: str, carried: Mapping[str, bytes] | None = None) -> UpdateResult:
        self.handled.append(why)
        self.carried.append(dict(carried or {}))
        self.during()
        error = self.errors.pop(0)
        if not self.errors:
            self.stop.set()
        if error is None:
            return UpdateResult(Step.SUCCEEDED, 1, "running v1")
        return UpdateResult(Step.FAILED, 1, error.reason, error)


class Clock:
    """Jumps `step` seconds at each reading: every pause the worker plans has passed by
    the time it looks again, so nothing really waits."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class RecordedBackoff(Backoff):
    pauses: ClassVar[list[float]] = []

    def next(self) -> float:
        pause = super().next()
        RecordedBackoff.pauses.append(pause)
        return pause


def play(
    errors: list[UpdateError | None], step: float = 10_000.0, min_interval: float = 10.0
) -> tuple[ScriptedUpdater, Stop, UpdateWorker]:
    stop = Stop()
    updater = ScriptedUpdater(errors, stop)
    return updater, stop, worker_of(updater, Clock(step), min_interval)


def worker_of(updater: ScriptedUpdater, clock: Clock, min_interval: float) -> UpdateWorker:
    """An update worker on the scripted updater and clock, reporting nowhere."""
    return UpdateWorker(
        updater,  # type: ignore[arg-type]
        lambda *_: None,
        min_interval=min_interval,
        every=3600.0,
        clock=clock,
    )


@pytest.fixture(autouse=True)
def recorded_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    RecordedBackoff.pauses = []
    monkeypatch.setattr("edge.update_worker.Backoff", RecordedBackoff)
    return RecordedBackoff.pauses


@pytest.mark.parametrize("error", [DownloadFailed("cdn down"), StagingFailed("disk full")])
def test_a_retryable_failure_is_tried_again_until_it_succeeds(
    error: UpdateError, recorded_backoff: list[float]
) -> None:
    updater, stop, worker = play([error, error, None])
    worker.run(stop)  # returns once the script is played out
    assert updater.handled == ["timer", "timer", "timer"]  # at start, then two retries
    assert len(recorded_backoff) == 2  # one jittered pause before each retry
    assert all(p <= RETRY_MAX_SECONDS for p in recorded_backoff)


@pytest.mark.parametrize(
    "error",
    [
        ManifestRefused("bad hash", HashMismatch("bad hash")),
        HealthCheckFailed("wrong outputs"),
        TrustRefused("Unsigned"),
    ],
)
def test_a_refusal_is_final(error: UpdateError, recorded_backoff: list[float]) -> None:
    updater, stop, worker = play([error, None])
    worker.run(stop)
    # Not retried: the next refresh is the timer's, an interval later.
    assert updater.handled == ["timer", "timer"]
    assert recorded_backoff == []


def test_nudges_during_a_refresh_are_one_more_refresh_after_the_rate_limit() -> None:
    updater, stop, worker = play([None, None], step=0.0, min_interval=7.0)
    worker.nudged(Nudge("vibration", 1).to_bytes())

    def storm() -> None:
        if len(updater.handled) == 1:
            for version in (2, 3, 4):
                worker.nudged(Nudge("vibration", version).to_bytes())

    updater.during = storm
    worker.run(stop)
    assert updater.handled == ["nudge: vibration v1", "nudge: vibration v4"]
    assert stop.pauses == [7.0]  # the rest of the interval since the last refresh


def test_only_the_refresh_a_nudge_caused_gets_its_carried_files() -> None:
    """The newest nudge's files go to the refresh it causes; the follow-up it asks
    for (and any retry or timer refresh) asks the CDN alone."""
    updater, stop, worker = play([None, None])
    files = (CarriedFile("tuf/metadata/timestamp.json", b"{}"),)
    worker.nudged(Nudge("vibration", 1, files).to_bytes())
    worker.nudged(Nudge("vibration", 2, files[:0]).to_bytes())
    worker.nudged(Nudge("vibration", 3, files).to_bytes())
    worker.run(stop)
    assert updater.handled[0] == "nudge: vibration v3, carrying 1 files"
    assert updater.carried == [{"tuf/metadata/timestamp.json": b"{}"}, {}]


def test_a_nudge_that_is_not_one_still_asks_for_a_refresh() -> None:
    updater, stop, worker = play([None], step=0.0)
    worker.nudged(b"\xff not json")
    worker.run(stop)
    assert len(updater.handled) == 1
    assert updater.handled[0].startswith("nudge (")


def test_the_hierarchy_tells_retryable_from_final() -> None:
    assert issubclass(DownloadFailed, RetryableUpdateError)
    assert issubclass(StagingFailed, RetryableUpdateError)
    assert not issubclass(HealthCheckFailed, RetryableUpdateError)
    assert issubclass(ManifestRefused, UpdateRefused)
    refusal = ManifestRefused("declared size differs", HashMismatch("x"))
    assert refusal.reason == "HashMismatch: declared size differs"
    assert UpdateResult(Step.FAILED, 1, "", DownloadFailed("x")).retryable
    assert not UpdateResult(Step.FAILED, 1, "", refusal).retryable


def test_a_refresh_that_finds_an_older_version_than_its_nudge_looks_again() -> None:
    """The metadata the device read was older than the nudge (a CDN cache, a timestamp
    being replaced): it asks the repository again within seconds, not at the hourly
    timer, and installs only what the repository then says."""
    clock = Clock(100.0)
    at: list[float] = []

    class Stale(ScriptedUpdater):
        def handle(self, why: str, carried: Mapping[str, bytes] | None = None) -> UpdateResult:
            super().handle(why, carried)
            at.append(clock.now)
            found = 2 if len(self.handled) == 3 else 1
            return UpdateResult(Step.ALREADY_INSTALLED if found == 1 else Step.SUCCEEDED, found, "")

    stop = Stop()
    updater = Stale([None] * 3, stop)
    worker = worker_of(updater, clock, min_interval=0.0)
    worker.nudged(Nudge("vibration", 2).to_bytes())
    worker.run(stop)
    assert len(at) == 3
    assert all(b - a < 3600 for a, b in itertools.pairwise(at))  # not the hourly timer


def test_follow_ups_for_a_version_the_device_is_never_offered_stop() -> None:
    """A replayed nudge for a version this device is never offered costs it at most
    FOLLOW_UPS extra refreshes; after those, the next is the hourly timer's."""
    clock = Clock(FOLLOW_UP_SECONDS)
    updater, stop, _ = play([None] * 5)
    at: list[float] = []
    updater.during = lambda: at.append(clock.now)
    worker = worker_of(updater, clock, min_interval=0.0)
    worker.nudged(Nudge("vibration", 9).to_bytes())
    # The worker waits on a condition between readings of the clock; jump the hour
    # at once once the follow-ups are spent.
    real_next = worker._next

    def next_reason(stop_: threading.Event, due: float) -> str | None:
        if len(at) == 1 + FOLLOW_UPS:
            clock.now = due
        return real_next(stop_, due)

    worker._next = next_reason  # type: ignore[method-assign,assignment]
    worker.run(stop)
    gaps = [b - a for a, b in itertools.pairwise(at)]
    assert len(at) == 5
    assert all(g < 3600 for g in gaps[:FOLLOW_UPS])
    assert gaps[FOLLOW_UPS] >= 3600 - FOLLOW_UP_SECONDS


def test_answered_names_the_last_nudge_whose_refresh_finished_and_nothing_else() -> None:
    """What a caller waits on to know a nudge is settled: set once the refresh the
    nudge caused returns, whatever it found; timer refreshes leave it alone."""
    updater, stop, worker = play([None, None], step=0.0, min_interval=0.0)
    seen: list[int | None] = []

    def second_nudge_during_the_first() -> None:
        seen.append(worker.answered)
        if len(updater.handled) == 1:
            worker.nudged(Nudge("vibration", 5).to_bytes())

    updater.during = second_nudge_during_the_first
    worker.nudged(Nudge("vibration", 4).to_bytes())
    worker.run(stop)
    assert seen == [None, 4]  # v4's mark only after its refresh returned
    assert worker.answered == 5
    timer_only, stop2, idle = play([None], step=0.0)
    idle.run(stop2)
    assert timer_only.handled == ["timer"]
    assert idle.answered is None
