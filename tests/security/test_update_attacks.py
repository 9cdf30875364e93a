"""Attacks on the update path: each refused, the old model still serving.

Cases from the reliability and security issue, numbered as there.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edge.model_sources import model_sources
from edge.probe import ChildProcessProbe, ProbeVerdict
from edgeloop.contract import (
    ArtifactRef,
    DeltaRef,
    Manifest,
    TensorSpec,
    ThingTopics,
    UploadRefusal,
    format_time,
    sha256_hex,
)
from edgeloop.contract.signers import LocalSigner
from edgeloop.delta import make_patch
from tests.support_http import Fault
from tests.support_release import vibration_runs, with_fields
from tests.support_rig import PowerCut, Rig, assert_serving, install_v1
from tests.support_world import World, _status, wait_for


@pytest.mark.parametrize("target", ["artifact", "compressed artifact", "patch"])
def test_a_tampered_artifact_or_patch_is_rejected_and_nothing_is_cached(
    rig: Rig, target: str
) -> None:
    """Case 1."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    raw = rig.releases.release(
        2, v2, bases=[1] if target == "patch" else [], compressed=target != "artifact"
    )
    for path in [p for p in rig.server.files if p.startswith("models/vibration/2/")]:
        data = bytearray(rig.server.files[path])
        data[len(data) // 2] ^= 0xFF
        rig.server.files[path] = bytes(data)
    result = rig.updater().handle(raw)
    assert result.step == "failed"
    assert "HashMismatch" in result.detail
    if target != "artifact":
        # A bad patch or compressed artifact falls back to the uncompressed
        # artifact, which is tampered too.
        assert rig.server.served("models/vibration/2/model.tflite") >= 1
    assert_serving(rig, 1)
    assert list(rig.store.staging.iterdir()) == []
    assert sorted(p.name for p in rig.store.versions.iterdir()) == ["1"]


def test_endless_data_is_cut_off_at_the_declared_length(rig: Rig) -> None:
    """Case 2."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    raw = rig.releases.release(2, v2)
    rig.server.faults["models/vibration/2/model.tflite"] = Fault(extra=b"\0" * 10_000_000)
    result = rig.updater().handle(raw)
    assert result.step == "failed"
    assert "sends more than the" in result.detail
    assert_serving(rig, 1)
    assert list(rig.store.staging.iterdir()) == []


@pytest.mark.parametrize("version", [0, 1])
def test_a_rollback_attack_with_a_lower_or_equal_version_is_refused(rig: Rig, version: int) -> None:
    """Case 3: validly signed, but not newer than what runs."""
    v1, _, _ = vibration_runs()
    rig.updater().handle(rig.releases.release(2, v1))
    rig.reports.clear()
    result = rig.updater().handle(rig.releases.release(max(version, 1), v1))
    assert result.step == "failed"
    assert "VersionNotNewer" in result.detail
    assert_serving(rig, 2)


def test_a_freeze_attack_with_an_expired_manifest_is_refused_and_status_says_why(rig: Rig) -> None:
    """Case 4."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    stale = datetime.now(UTC) - timedelta(days=3)
    result = rig.updater().handle(rig.releases.release(2, v2, now=stale))
    assert result.step == "failed"
    assert "ManifestExpired" in result.detail
    step, _, detail = rig.reports[-1]
    assert step == "failed"
    assert "expired at" in detail  # the status report says why
    assert_serving(rig, 1)


def test_a_manifest_signed_by_the_wrong_key_is_refused(rig: Rig) -> None:
    """Case 5."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    result = rig.updater().handle(rig.releases.release(2, v2, signer=LocalSigner.generate()))
    assert result.step == "failed"
    assert "UnknownKey" in result.detail
    assert_serving(rig, 1)
    assert rig.server.served("models/vibration/2/model.tflite") == 0


def test_a_model_for_other_inputs_is_refused(rig: Rig) -> None:
    """Case 6: the input spec does not fit this device."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    raw = rig.releases.release(2, v2, mutate=with_fields(input=TensorSpec(shape=(-1, 9))))
    result = rig.updater().handle(raw)
    assert result.step == "failed"
    assert "InputSpecMismatch" in result.detail
    assert_serving(rig, 1)


def test_an_unsigned_manifest_is_refused(rig: Rig) -> None:
    """Case 5."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    unsigned = json.loads(rig.releases.release(2, v2))
    del unsigned["signature"]
    result = rig.updater().handle(json.dumps(unsigned).encode())
    assert result.step == "failed"
    assert "SignatureInvalid" in result.detail
    assert "unsigned" in result.detail
    assert_serving(rig, 1)


def test_a_signature_over_different_bytes_is_refused(rig: Rig) -> None:
    """Case 5: a genuine signature moved onto another manifest."""
    install_v1(rig)
    _, v2, v3 = vibration_runs()
    genuine = json.loads(rig.releases.release(2, v2))
    other = json.loads(rig.releases.release(3, v3))
    other["signature"] = genuine["signature"]
    result = rig.updater().handle(json.dumps(other).encode())
    assert result.step == "failed"
    assert "altered after signing" in result.detail
    assert rig.server.served("models/vibration/3/model.tflite") == 0
    assert_serving(rig, 1)


def test_an_artifact_that_disagrees_with_the_manifest_hash_is_refused(rig: Rig) -> None:
    """Case 6: a validly signed manifest, another (real, loadable) model at its path."""
    install_v1(rig)
    v1, v2, _ = vibration_runs()
    raw = rig.releases.release(2, v2)
    assert v1.tflite is not None
    rig.server.files["models/vibration/2/model.tflite"] = v1.tflite
    result = rig.updater().handle(raw)
    assert result.step == "failed"
    assert "HashMismatch" in result.detail or "SizeMismatch" in result.detail
    assert_serving(rig, 1)


def test_a_patch_made_against_another_base_falls_back_to_the_full_artifact(rig: Rig) -> None:
    """Case 6: the delta names the installed model as its base, but was made from another."""
    install_v1(rig)
    _, v2, v3 = vibration_runs()
    assert v2.tflite is not None
    assert v3.tflite is not None
    installed = rig.store.current()
    assert installed is not None
    foreign = make_patch(v3.tflite, v2.tflite, "bsdiff4")
    path = "models/vibration/2/from-1.bsdiff4"
    rig.server.files[path] = foreign
    claim = DeltaRef(
        1, installed.manifest.artifact.sha256, "bsdiff4", path, sha256_hex(foreign), len(foreign)
    )
    raw = rig.releases.release(2, v2, mutate=with_fields(deltas=(claim,)))
    result = rig.updater().handle(raw)
    assert result.step == "succeeded", result.detail
    assert rig.server.served(path) == 1
    assert rig.server.served("models/vibration/2/model.tflite") == 1
    fallbacks = [d for step, _, d in rig.reports if step == "downloading" and "patch unusable" in d]
    assert len(fallbacks) == 1
    assert "HashMismatch" in fallbacks[0] or "patched model" in fallbacks[0]
    assert_serving(rig, 2)


def test_patches_only_for_bases_this_device_lacks_are_never_fetched(rig: Rig) -> None:
    """Case 6: the wrong base is noticed before any patch byte is downloaded."""
    install_v1(rig)
    _, v2, v3 = vibration_runs()
    assert v3.tflite is not None
    rig.releases.models[7] = v3.tflite  # a version this device never had
    raw = rig.releases.release(2, v2, bases=[7])
    assert json.loads(raw)["deltas"]
    result = rig.updater().handle(raw)
    assert result.step == "succeeded", result.detail
    assert [p for p, _ in rig.server.requests if "/from-" in p] == []
    assert rig.server.served("models/vibration/2/model.tflite") == 1
    assert_serving(rig, 2)


def test_another_models_validly_signed_manifest_is_refused(rig: Rig) -> None:
    """Finding 2 (#15): the fleet key signs every model's releases; the name must match."""
    install_v1(rig)
    _, v2, v3 = vibration_runs()
    foreign = rig.releases.release(5, v3, mutate=with_fields(model="pressure"))
    result = rig.updater().handle(foreign)
    assert result.step == "failed"
    assert "NotThisDevice" in result.detail
    assert "'pressure'" in result.detail
    assert_serving(rig, 1)
    # The device's own next version is not "not newer" than the foreign one.
    assert rig.updater().handle(rig.releases.release(2, v2)).step == "succeeded"


def test_another_models_manifest_with_the_running_version_is_not_reported_installed(
    rig: Rig,
) -> None:
    """Finding 2 (#15): same version number, other model: a refusal, not a no-op."""
    install_v1(rig)
    v1, _, _ = vibration_runs()
    result = rig.updater().handle(rig.releases.release(1, v1, mutate=with_fields(model="pump")))
    assert result.step == "failed"
    assert "NotThisDevice" in result.detail


def test_a_clock_behind_its_floor_does_not_accept_an_expired_manifest(rig: Rig) -> None:
    """Finding 3 (#15): a board without an RTC boots in the past; the newest created_at it
    trusted (persisted) proves the time is later, so an expired manifest stays expired."""
    install_v1(rig)  # created now: the floor
    _, v2, _ = vibration_runs()
    real_now = datetime.now(UTC)
    stale = rig.releases.release(2, v2, now=real_now - timedelta(days=5))  # expired 4 days ago
    boot_clock = real_now - timedelta(days=4, hours=12)  # where the stale one looks fresh
    rig.store = rig.reopen()  # the floor survives a restart
    assert rig.store.state.clock_floor is not None
    result = rig.updater().handle(stale, now=boot_clock)
    assert result.step == "failed"
    assert "ManifestExpired" in result.detail
    assert_serving(rig, 1)


def test_a_manifest_created_in_the_future_is_not_installed_yet(rig: Rig) -> None:
    """Finding 3 (#15): retried later, since it is the device clock that is usually wrong."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    early = rig.releases.release(2, v2, now=datetime.now(UTC) + timedelta(hours=2))
    result = rig.updater().handle(early)
    assert result.step == "failed"
    assert "ClockBehind" in result.detail
    assert result.retryable
    assert_serving(rig, 1)
    assert rig.server.served("models/vibration/2/model.tflite") == 0


def test_a_manifest_that_expires_before_it_was_created_is_refused(rig: Rig) -> None:
    """Finding 3 (#15)."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    now = datetime.now(UTC)
    # Both dates ahead of the clock, within the skew: only their order is wrong.
    backwards = with_fields(
        created_at=format_time(now + timedelta(minutes=3)),
        expires_at=format_time(now + timedelta(minutes=1)),
    )
    result = rig.updater().handle(rig.releases.release(2, v2, mutate=backwards), now=now)
    assert result.step == "failed"
    assert "NotThisDevice" in result.detail
    assert "not after its creation" in result.detail
    assert_serving(rig, 1)


def test_an_announcement_with_a_4301_digit_version_does_not_stop_updates(world: World) -> None:
    """Finding 1 (#15): json.loads raises a plain ValueError on it; the thread survives."""
    v1, _, _ = vibration_runs()
    agent = world.agent("pump-1", source=iter(()))
    agent.start(score=False)
    huge = b'{"model": "vibration", "version": 1' + b"0" * 4300 + b"}"
    world.cloud.announce("vibration", huge)
    wait_for(lambda: "MalformedManifest" in _status(world, "pump-1").get("detail", ""))
    world.cloud.announce("vibration", world.releases.release(1, v1))
    wait_for(lambda: agent.version == 1, what="the next, valid announcement installed")
    assert agent.failure is None


def test_a_signed_manifest_with_a_non_ascii_path_does_not_stop_updates(world: World) -> None:
    """Finding 1 (#15): it used to end the update thread with a UnicodeEncodeError."""
    v1, _, _ = vibration_runs()
    agent = world.agent("pump-1", source=iter(()))
    agent.start(score=False)

    def accented(manifest: Manifest) -> Manifest:
        return replace(
            manifest, artifact=replace(manifest.artifact, path="models/vibration/1/modèle.tflite")
        )

    world.cloud.announce("vibration", world.releases.release(1, v1, mutate=accented))
    wait_for(lambda: "MalformedManifest" in _status(world, "pump-1").get("detail", ""))
    world.cloud.announce("vibration", world.releases.release(1, v1))
    wait_for(lambda: agent.version == 1, what="the next, valid announcement installed")
    assert agent.failure is None


def _probe_running(code: str, timeout: float = 10.0) -> ChildProcessProbe:
    """The real child-process check, with a child that misbehaves as a broken model makes
    the interpreter misbehave: killed by a signal, or stuck."""
    return ChildProcessProbe(timeout=timeout, command=(sys.executable, "-c", code))


@pytest.mark.parametrize(
    ("child", "refusal"),
    [
        ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "ModelCrashed: .*SIGSEGV"),
        ("import time; time.sleep(60)", "ModelTooSlow: .*over 1 s"),
    ],
)
def test_a_model_that_crashes_or_hangs_the_interpreter_is_tried_in_a_child_and_refused(
    rig: Rig, child: str, refusal: str
) -> None:
    """Finding 6 (#15): the crash or the hang happens in the child; the agent refuses the
    model, keeps serving the old one, and does not try it again."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    raw = rig.releases.release(2, v2)
    result = rig.updater(probe=_probe_running(child, timeout=1.0)).handle(raw)
    assert result.step == "failed"
    assert re.search(refusal, result.detail), result.detail
    assert not result.retryable
    assert "swapped" not in rig.steps()
    assert_serving(rig, 1)
    assert rig.store.state.attempting is None


def test_the_child_check_refuses_a_model_the_real_interpreter_cannot_load(rig: Rig) -> None:
    """Finding 6 (#15), with the real `python -m edge.probe` and LiteRT."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    assert v2.tflite is not None
    broken = v2.tflite[:64] + b"\0" * (len(v2.tflite) - 64)
    path = "models/vibration/2/model.tflite"
    raw = rig.releases.release(
        2,
        v2,
        mutate=with_fields(artifact=ArtifactRef(path, sha256_hex(broken), len(broken))),
    )
    rig.server.files[path] = broken
    result = rig.updater().handle(raw)
    assert result.step == "failed"
    assert result.detail.startswith(("ModelLoadError", "ModelCrashed")), result.detail
    assert_serving(rig, 1)


class DiesWhileTrying:
    """The agent's process dies while the new model is being tried (a crash the child
    did not reproduce, in the agent's own load or first inference)."""

    def check(self, model: bytes, n_features: int, checks: list[dict[str, Any]]) -> ProbeVerdict:
        raise PowerCut("the agent died trying the model")


def test_a_crash_while_trying_a_model_refuses_it_after_restart_without_a_loop(rig: Rig) -> None:
    """Finding 6 (#15): the persisted "attempting v2" marker; the retained announcement
    of v2 is not tried again on the next start."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    raw = rig.releases.release(2, v2)
    with pytest.raises(PowerCut):
        rig.updater(probe=DiesWhileTrying()).handle(raw)
    rig.store = rig.reopen()  # the restart
    assert rig.store.state.attempting is None
    assert 2 in rig.store.state.refused
    result = rig.updater().handle(raw)
    assert result.step == "failed"
    assert "RefusedBefore" in result.detail
    assert_serving(rig, 1)
    assert rig.updater().handle(rig.releases.release(3, v2)).step == "succeeded"


def test_a_manifest_without_health_checks_is_refused(rig: Rig) -> None:
    """Finding 10 (#15): a model the device cannot try first is not installed."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    result = rig.updater().handle(rig.releases.release(2, v2, mutate=with_fields(health_checks=())))
    assert result.step == "failed"
    assert "Unchecked" in result.detail
    assert rig.server.served("models/vibration/2/model.tflite") == 0
    assert_serving(rig, 1)


def test_a_patch_declared_over_the_size_cap_is_never_fetched(rig: Rig) -> None:
    """Finding 10 (#15): deltas are capped by max_bytes like the artifact."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    assert v2.tflite is not None
    raw = rig.releases.release(2, v2, bases=[1])
    delta = json.loads(raw)["deltas"][0]
    cap = len(v2.tflite) + 1  # the model fits, a patch declared bigger does not
    huge = DeltaRef(
        1, delta["from_sha256"], delta["codec"], delta["path"], delta["sha256"], cap + 1
    )
    raw = rig.releases.release(2, v2, bases=[1], mutate=with_fields(deltas=(huge,)))
    result = rig.updater(
        sources=model_sources(rig.fetcher(), rig.store.staging, cap), max_bytes=cap
    ).handle(raw)
    assert result.step == "succeeded", result.detail
    assert rig.server.served(delta["path"]) == 0
    assert any("over this device's" in d for s, _, d in rig.reports if s == "downloading")
    assert_serving(rig, 2)


def test_unsolicited_upload_answers_are_dropped(world: World) -> None:
    """Finding 10 (#15): the map of pending answers cannot be grown from outside."""
    agent = world.agent("pump-1", source=iter(()))
    agent.start(score=False)
    assert agent.link.wait_connected(10)
    topic = ThingTopics("pump-1").upload_response
    for i in range(200):
        refusal = UploadRefusal(f"{i:016x}", "throttled", "not asked for")
        world.cloud.client.publish(topic, refusal.to_bytes(), qos=1).wait_for_publish(5)
    # A real request still gets its answer through the same map afterwards.
    answered = agent.link.request_upload_url("vibration", "application/x-npz", 10, timeout=10)
    assert answered.request_id is not None
    assert agent.link._answers == {}


def test_a_real_export_two_bytes_off_that_hangs_litert_is_stopped_by_the_time_limit(
    rig: Rig,
) -> None:
    """Finding 6 (#15), with a model found by mutating a real export two bytes at a time:
    LiteRT does not return on it. The child is stopped at the limit; the agent serves on."""
    install_v1(rig)
    v1, _, _ = vibration_runs()
    assert v1.tflite is not None
    hangs = bytearray(v1.tflite)
    hangs[983], hangs[1523] = 124, 206
    path = "models/vibration/2/model.tflite"
    raw = rig.releases.release(
        2, v1, mutate=with_fields(artifact=ArtifactRef(path, sha256_hex(bytes(hangs)), len(hangs)))
    )
    rig.server.files[path] = bytes(hangs)
    started = time.monotonic()
    result = rig.updater(probe=ChildProcessProbe(timeout=2.0)).handle(raw)
    assert result.step == "failed"
    assert result.detail.startswith("ModelTooSlow"), result.detail
    assert time.monotonic() - started < 10
    assert_serving(rig, 1)
