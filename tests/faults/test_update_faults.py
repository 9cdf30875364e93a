"""Faults on the update path: slow or lost network, power cuts, full disks, bad models.

Cases from the reliability and security issue, numbered as there.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from edge.download import HttpFetcher
from edgeloop.contract import Step
from tests.support_http import Fault
from tests.support_release import vibration_runs, with_fields
from tests.support_rig import PowerCut, Rig, assert_serving, install_v1


def test_a_stalled_cdn_times_out_after_bounded_retries_and_the_old_model_serves(rig: Rig) -> None:
    """Case 7."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2)
    rig.server.faults[rig.key(2, "model.tflite")] = Fault(stall_after=100)
    rig.timeout = 0.3
    result = rig.updater().handle()
    assert result.step == "failed"
    assert result.detail.startswith("DownloadError: ")
    assert "gave up after 3 attempts" in result.detail
    assert result.retryable
    assert_serving(rig, 1)


def test_network_loss_mid_download_resumes_where_it_stopped(rig: Rig) -> None:
    """Case 8."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2)
    key = rig.key(2, "model.tflite")
    rig.server.faults[key] = Fault(drop_after=1000)
    assert rig.updater().handle().step == "succeeded"
    ranges = [r for p, r in rig.server.requests if p == key]
    assert ranges == [None, "bytes=1000-"]
    assert_serving(rig, 2)


@pytest.mark.parametrize(
    "step", ["received", "verified", "downloading", "patching", "checking", "swapped", "persisted"]
)
def test_power_loss_at_any_step_restarts_on_a_complete_model(rig: Rig, step: str) -> None:
    """Case 9: the process stops dead at `step`; a new store is opened as on boot."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, bases=[1])
    rig.power_cut_at = Step(step)
    with pytest.raises(PowerCut):
        rig.updater().handle()
    restarted = rig.reopen().current()
    assert restarted is not None
    expected = 2 if step == "persisted" else 1
    assert restarted.version == expected
    assert len(restarted.model) == restarted.manifest.artifact.size
    # The restarted agent refreshes again and completes the update.
    rig.store = rig.reopen()
    rig.power_cut_at = None
    if expected == 1:
        from edge.scoring import LoadedModel
        from edgeloop.runtime import CompiledModel

        rig.scorer.swap(LoadedModel(restarted.manifest, CompiledModel(restarted.model)))
        assert rig.updater().handle().step == "succeeded"
    assert_serving(rig, 2)


def test_the_same_version_announced_again_is_a_no_op_reported_as_installed(rig: Rig) -> None:
    """Case 11: a nudge (or the timer) with the pointer still on the running version."""
    install_v1(rig)
    requests = len(rig.server.requests)
    result = rig.updater().handle("nudge: vibration v1")
    assert result.step == "already_installed"
    assert rig.steps() == ["received", "already_installed"]
    assert_serving(rig, 1)
    # Only the timestamp was fetched: nothing changed since the last refresh.
    assert [p for p, _ in rig.server.requests[requests:]] == [
        "models/tuf/metadata/2.root.json",
        "models/tuf/metadata/timestamp.json",
    ]


def test_a_full_disk_while_staging_fails_before_the_swap(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case 12."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2)

    def disk_full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rig.store, "stage", disk_full)
    result = rig.updater().handle()
    assert result.step == "failed"
    assert "StagingFailed" in result.detail
    assert "No space left on device" in result.detail
    assert "swapped" not in rig.steps()
    assert_serving(rig, 1)


def test_a_failed_health_check_before_the_swap_is_refused(rig: Rig) -> None:
    """Case 10 (its first half: the check runs before the swap)."""
    install_v1(rig)
    _, v2, _ = vibration_runs()

    def wrong_golden(manifest):  # type: ignore[no-untyped-def]
        check = manifest.health_checks[0]
        bad = tuple(tuple(v + 1.0 for v in row) for row in check.expected)
        return with_fields(health_checks=(type(check)(check.inputs, bad, check.tolerance),))(
            manifest
        )

    rig.releases.release(2, v2, mutate=wrong_golden)
    result = rig.updater().handle()
    assert result.step == "failed"
    assert "HealthCheckFailed" in result.detail
    assert_serving(rig, 1)


def test_a_torn_model_file_after_power_loss_falls_back_to_the_previous_complete_model(
    rig: Rig,
) -> None:
    """Case 9: the disk lost the tail of the newest model; boot runs the previous one."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, bases=[1])
    assert rig.updater().handle().step == "succeeded"
    model_file = rig.store.versions / "2" / "model.tflite"
    data = model_file.read_bytes()
    model_file.write_bytes(data[: len(data) // 2])
    restarted = rig.reopen().current()
    assert restarted is not None
    assert restarted.version == 1
    assert len(restarted.model) == restarted.manifest.artifact.size


class KilledMidDownload:
    """Writes the first bytes of a target where the agent stages it, then the power goes.

    A killed process runs no cleanup, but a raised PowerCut still runs `finally`
    blocks: `restore` puts back what the disk would hold after a real kill.
    """

    def __init__(self, rig: Rig, keep: int) -> None:
        self.rig, self.keep = rig, keep
        self.left: list[tuple[Path, bytes]] = []

    def fetch(self, path: str, dest: Path, size: int) -> bytes:
        if not path.startswith("tuf/targets/"):
            return self.rig.fetcher().fetch(path, dest, size)  # metadata as usual
        partial = self.rig.server.files["models/" + path][: self.keep]
        dest.write_bytes(partial)
        self.left.append((dest, partial))
        raise PowerCut(f"power lost downloading {path}")

    def restore(self) -> None:
        for dest, partial in self.left:
            dest.write_bytes(partial)


def test_a_partial_download_of_one_version_is_never_resumed_into_another(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 4 (#15): staging files are named by the target path, which carries the
    hash the bytes must have."""
    install_v1(rig)
    _, v2, v3 = vibration_runs()
    killed = KilledMidDownload(rig, keep=500)
    rig.releases.release(2, v2)
    monkeypatch.setattr(HttpFetcher, "fetch", lambda _, *a: killed.fetch(*a))
    with pytest.raises(PowerCut):
        rig.updater().handle()
    monkeypatch.undo()
    killed.restore()
    assert [p.stat().st_size for p in rig.store.staging.iterdir()] == [500]
    rig.store = rig.reopen()
    rig.releases.release(3, v3, previous=2)
    result = rig.updater().handle()
    assert result.step == "succeeded", result.detail
    assert [r for p, r in rig.server.requests if p == rig.key(3, "model.tflite")] == [None]
    assert_serving(rig, 3)
