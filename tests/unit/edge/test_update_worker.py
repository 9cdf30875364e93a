"""The update worker: it retries what the hierarchy calls retryable, and nothing else."""

from __future__ import annotations

import threading

import pytest

from edge.errors import (
    DownloadFailed,
    HealthCheckFailed,
    ManifestRefused,
    RetryableUpdateError,
    StagingFailed,
    UpdateError,
    UpdateRefused,
)
from edge.update_worker import UpdateWorker
from edge.updater import UpdateResult
from edgeloop.contract import HashMismatch, Step


class Stop(threading.Event):
    """The worker's stop event; its pauses are recorded instead of slept."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.pauses.append(timeout)
        return self.is_set()


class ScriptedUpdater:
    """Answers each attempt with the next scripted error (None: success); stops the
    worker when the script is played out."""

    def __init__(self, errors: list[UpdateError | None], stop: Stop) -> None:
        self.errors, self.stop = errors, stop
        self.handled: list[bytes] = []

    def handle(self, raw: bytes) -> UpdateResult:
        self.handled.append(raw)
        error = self.errors.pop(0)
        if not self.errors:
            self.stop.set()
        if error is None:
            return UpdateResult(Step.SUCCEEDED, 1, "running v1")
        return UpdateResult(Step.FAILED, 1, error.reason, error)


def play(errors: list[UpdateError | None]) -> tuple[ScriptedUpdater, Stop]:
    stop = Stop()
    updater = ScriptedUpdater(errors, stop)
    worker = UpdateWorker(updater, lambda *_: None)  # type: ignore[arg-type]
    worker.announced(b"v1")
    worker.run(stop)  # returns once the script is played out
    return updater, stop


@pytest.mark.parametrize("error", [DownloadFailed("cdn down"), StagingFailed("disk full")])
def test_a_retryable_failure_is_tried_again_until_it_succeeds(error: UpdateError) -> None:
    updater, stop = play([error, error, None])
    assert updater.handled == [b"v1", b"v1", b"v1"]
    assert len(stop.pauses) == 2  # one jittered pause before each retry


@pytest.mark.parametrize(
    "error",
    [
        ManifestRefused("bad hash", HashMismatch("bad hash")),
        HealthCheckFailed("wrong outputs"),
    ],
)
def test_a_refusal_is_final(error: UpdateError) -> None:
    updater, stop = play([error])
    assert updater.handled == [b"v1"]
    assert stop.pauses == []


def test_the_hierarchy_tells_retryable_from_final() -> None:
    assert issubclass(DownloadFailed, RetryableUpdateError)
    assert issubclass(StagingFailed, RetryableUpdateError)
    assert not issubclass(HealthCheckFailed, RetryableUpdateError)
    assert issubclass(ManifestRefused, UpdateRefused)
    refusal = ManifestRefused("declared size differs", HashMismatch("x"))
    assert refusal.reason == "HashMismatch: declared size differs"
    assert UpdateResult(Step.FAILED, 1, "", DownloadFailed("x")).retryable
    assert not UpdateResult(Step.FAILED, 1, "", refusal).retryable
