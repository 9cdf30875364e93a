"""The update state machine against a real HTTP server and the real interpreter.

Every refusal leaves the old model serving and reports why.
"""

from __future__ import annotations

import errno
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from edge.updater import UpdateAbandoned
from edgeloop.contract import LocalSigner, TensorSpec
from tests.integration.edge.conftest import Rig
from tests.support_http import Fault
from tests.support_release import vibration_runs, with_fields


def _install_v1(rig: Rig) -> None:
    v1, _, _ = vibration_runs()
    assert rig.updater().handle(rig.releases.release(1, v1)).step == "succeeded"
    assert rig.scorer.model is not None
    rig.reports.clear()


def _serving(rig: Rig, version: int) -> None:
    model = rig.scorer.model
    assert model is not None
    assert model.version == version
    assert rig.store.current() is not None
    assert rig.store.current().version == version  # type: ignore[union-attr]
    assert model.runtime.predict(np.zeros((2, 8), dtype=np.float32)).shape == (2,)


def test_an_announcement_leads_to_a_verified_patched_swapped_model(rig: Rig) -> None:
    _install_v1(rig)
    _, v2, _ = vibration_runs()
    raw = rig.releases.release(2, v2, bases=[1])
    result = rig.updater().handle(raw)
    assert result.step == "succeeded", result.detail
    assert rig.steps() == [
        "received",
        "verified",
        "downloading",
        "patching",
        "checking",
        "swapped",
        "persisted",
        "succeeded",
    ]
    _serving(rig, 2)
    # The patch travelled, not the full model.
    assert rig.server.served("models/vibration/2/model.tflite") == 0
    assert any(
        p.startswith("models/vibration/2/from-1.") and n
        for p, n in [(p, rig.server.served(p)) for p in rig.server.files]
    )
    assert rig.reopen().current().version == 2  # type: ignore[union-attr]
    assert rig.reopen().previous().version == 1  # type: ignore[union-attr]


def test_the_first_model_arrives_as_the_full_artifact(rig: Rig) -> None:
    _install_v1(rig)
    assert rig.server.served("models/vibration/1/model.tflite") == 1


@pytest.mark.parametrize("target", ["artifact", "patch"])
def test_a_tampered_download_is_refused_and_nothing_is_kept(rig: Rig, target: str) -> None:
    _install_v1(rig)
    _, v2, _ = vibration_runs()
    raw = rig.releases.release(2, v2, bases=[1] if target == "patch" else [])
    for path in [p for p in rig.server.files if p.startswith("models/vibration/2/")]:
        data = bytearray(rig.server.files[path])
        data[len(data) // 2] ^= 0xFF
        rig.server.files[path] = bytes(data)
    result = rig.updater().handle(raw)
    assert result.step == "failed"
    assert "HashMismatch" in result.detail
    if target == "patch":
        # A bad patch falls back to the full artifact, which is tampered too.
        assert rig.server.served("models/vibration/2/model.tflite") >= 1
    _serving(rig, 1)
    assert list(rig.store.staging.iterdir()) == []
    assert sorted(p.name for p in rig.store.versions.iterdir()) == ["1"]


def test_a_wrong_key_is_refused(rig: Rig) -> None:
    _install_v1(rig)
    _, v2, _ = vibration_runs()
    result = rig.updater().handle(rig.releases.release(2, v2, signer=LocalSigner.generate()))
    assert result.step == "failed"
    assert "UnknownKey" in result.detail
    _serving(rig, 1)
    assert rig.server.served("models/vibration/2/model.tflite") == 0


def test_an_expired_manifest_is_refused(rig: Rig) -> None:
    _install_v1(rig)
    _, v2, _ = vibration_runs()
    stale = datetime.now(UTC) - timedelta(days=3)
    result = rig.updater().handle(rig.releases.release(2, v2, now=stale))
    assert result.step == "failed"
    assert "ManifestExpired" in result.detail
    assert rig.reports[-1][0] == "failed"
    _serving(rig, 1)


@pytest.mark.parametrize("version", [0, 1])
def test_a_version_not_above_the_installed_one_is_refused(rig: Rig, version: int) -> None:
    v1, _, _ = vibration_runs()
    rig.updater().handle(rig.releases.release(2, v1))
    rig.reports.clear()
    result = rig.updater().handle(rig.releases.release(max(version, 1), v1))
    assert result.step == "failed"
    assert "VersionNotNewer" in result.detail
    _serving(rig, 2)


def test_the_same_version_again_is_a_no_op_reported_as_installed(rig: Rig) -> None:
    _install_v1(rig)
    v1, _, _ = vibration_runs()
    result = rig.updater().handle(rig.releases.release(1, v1))
    assert result.step == "already_installed"
    assert rig.steps() == ["received", "already_installed"]
    _serving(rig, 1)


def test_an_input_spec_mismatch_is_refused(rig: Rig) -> None:
    _install_v1(rig)
    _, v2, _ = vibration_runs()
    raw = rig.releases.release(2, v2, mutate=with_fields(input=TensorSpec(shape=(-1, 9))))
    result = rig.updater().handle(raw)
    assert result.step == "failed"
    assert "InputSpecMismatch" in result.detail
    _serving(rig, 1)


def test_a_download_larger_than_declared_is_cut_off(rig: Rig) -> None:
    _install_v1(rig)
    _, v2, _ = vibration_runs()
    raw = rig.releases.release(2, v2)
    rig.server.faults["models/vibration/2/model.tflite"] = Fault(extra=b"\0" * 10_000_000)
    result = rig.updater().handle(raw)
    assert result.step == "failed"
    assert "sends more than the" in result.detail
    _serving(rig, 1)
    assert list(rig.store.staging.iterdir()) == []


def test_a_stalled_server_times_out_and_the_old_model_serves(rig: Rig) -> None:
    _install_v1(rig)
    _, v2, _ = vibration_runs()
    raw = rig.releases.release(2, v2)
    rig.server.faults["models/vibration/2/model.tflite"] = Fault(stall_after=100)
    rig.timeout = 0.3
    result = rig.updater().handle(raw)
    assert result.step == "failed"
    assert "DownloadFailed" in result.detail
    assert "gave up after 3 attempts" in result.detail
    _serving(rig, 1)


def test_a_dropped_connection_resumes_where_it_stopped(rig: Rig) -> None:
    _install_v1(rig)
    _, v2, _ = vibration_runs()
    raw = rig.releases.release(2, v2)
    rig.server.faults["models/vibration/2/model.tflite"] = Fault(drop_after=1000)
    assert rig.updater().handle(raw).step == "succeeded"
    ranges = [r for p, r in rig.server.requests if p == "models/vibration/2/model.tflite"]
    assert ranges == [None, "bytes=1000-"]
    _serving(rig, 2)


def test_a_failed_health_check_is_refused(rig: Rig) -> None:
    _install_v1(rig)
    _, v2, _ = vibration_runs()

    def wrong_golden(manifest):  # type: ignore[no-untyped-def]
        check = manifest.health_checks[0]
        bad = tuple(tuple(v + 1.0 for v in row) for row in check.expected)
        return with_fields(health_checks=(type(check)(check.inputs, bad, check.tolerance),))(
            manifest
        )

    result = rig.updater().handle(rig.releases.release(2, v2, mutate=wrong_golden))
    assert result.step == "failed"
    assert "HealthCheckFailed" in result.detail
    _serving(rig, 1)


def test_a_full_disk_while_staging_fails_before_the_swap(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_v1(rig)
    _, v2, _ = vibration_runs()
    raw = rig.releases.release(2, v2)

    def disk_full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rig.store, "stage", disk_full)
    result = rig.updater().handle(raw)
    assert result.step == "failed"
    assert "StagingFailed" in result.detail
    assert "No space left on device" in result.detail
    assert "swapped" not in rig.steps()
    _serving(rig, 1)


@pytest.mark.parametrize(
    "step", ["received", "verified", "downloading", "patching", "checking", "swapped", "persisted"]
)
def test_a_restart_after_a_crash_at_any_step_runs_a_complete_model(rig: Rig, step: str) -> None:
    _install_v1(rig)
    _, v2, _ = vibration_runs()
    raw = rig.releases.release(2, v2, bases=[1])
    rig.crash_at = step
    with pytest.raises(UpdateAbandoned):
        rig.updater().handle(raw)
    restarted = rig.reopen().current()
    assert restarted is not None
    expected = 2 if step == "persisted" else 1
    assert restarted.version == expected
    assert len(restarted.model) == restarted.manifest.artifact.size
    # The restarted agent, given the retained announcement again, completes the update.
    rig.store = rig.reopen()
    rig.crash_at = None
    if expected == 1:
        from edge.runtime import CompiledModel
        from edge.scoring import LoadedModel

        rig.scorer.swap(LoadedModel(restarted.manifest, CompiledModel(restarted.model)))
        assert rig.updater().handle(raw).step == "succeeded"
    _serving(rig, 2)
