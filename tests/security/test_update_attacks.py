"""Attacks on the update path: each refused, the old model still serving.

Cases from the reliability and security issue, numbered as there, against the
TUF path: the device believes only metadata its shipped root vouches for, and
installs only what the signed rollout pointer names for it, only if newer.
"""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata

from edge.model_sources import model_sources
from edge.probe import ChildProcessProbe, ProbeVerdict
from edge.sources import Sample
from edgeloop.contract import TensorSpec, ThingTopics, UploadRefusal, format_time
from edgeloop.contract.trust_targets import REPOSITORY_PREFIX, RolloutPointer
from edgeloop.delta import make_patch
from edgeloop.trust import PatchRelease
from tests.support_http import Fault
from tests.support_release import vibration_runs, with_fields
from tests.support_rig import PowerCut, Rig, assert_serving, install_v1
from tests.support_world import World, _status, wait_for

TIMESTAMP = REPOSITORY_PREFIX + "tuf/metadata/timestamp.json"


def _forged_timestamp(files: dict[str, bytes], signer: CryptoSigner | None) -> bytes:
    """The served timestamp, one version on, signed by `signer` (None: not signed)."""
    md = Metadata.from_bytes(files[TIMESTAMP])
    md.signed.version += 1
    if signer is None:
        md.signatures.clear()
    else:
        md.sign(signer, append=False)
    return md.to_bytes()


@pytest.mark.parametrize("target", ["artifact", "compressed artifact", "patch"])
def test_a_tampered_artifact_or_patch_is_rejected_and_nothing_is_cached(
    rig: Rig, target: str
) -> None:
    """Case 1."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(
        2, v2, bases=[1] if target == "patch" else [], compressed=target != "artifact"
    )
    for path in [p for p in rig.server.files if re.search(r"/vibration/2/\w+\.(model|from)", p)]:
        data = bytearray(rig.server.files[path])
        data[len(data) // 2] ^= 0xFF
        rig.server.files[path] = bytes(data)
    result = rig.updater().handle()
    assert result.step == "failed"
    assert "LengthOrHashMismatch" in result.detail
    if target != "artifact":
        # A bad patch or compressed artifact falls back to the uncompressed
        # artifact, which is tampered too.
        assert rig.served(2, "model.tflite") >= 1
    assert_serving(rig, 1)
    assert list(rig.store.staging.iterdir()) == []
    assert sorted(p.name for p in rig.store.versions.iterdir()) == ["1"]


def test_endless_data_is_cut_off_at_the_declared_length(rig: Rig) -> None:
    """Case 2."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2)
    rig.server.faults[rig.key(2, "model.tflite")] = Fault(extra=b"\0" * 10_000_000)
    result = rig.updater().handle()
    assert result.step == "failed"
    assert "sends more than the" in result.detail
    assert_serving(rig, 1)
    assert list(rig.store.staging.iterdir()) == []


def test_a_pointer_moved_back_takes_the_device_back_on_its_kept_bytes_and_says_so(
    rig: Rig,
) -> None:
    """Case 3 (finding 2 of #24): the signed pointer is the authority both ways. Moved
    back to v1 (an abort), a device on v2 goes back to v1, from the bytes it kept, and
    its report says the rollout replaced v2; asked again, v1 is already running."""
    v1, v2, _ = vibration_runs()
    rig.releases.release(1, v1)
    assert rig.updater().handle().step == "succeeded"
    rig.releases.release(2, v2, previous=1)
    assert rig.updater().handle().step == "succeeded"
    rig.releases.point(1)
    requests = len(rig.server.requests)
    result = rig.updater().handle()
    assert result.step == "succeeded", result.detail
    assert result.version == 1
    assert "replaced v2" in result.detail
    assert ("succeeded", 1, result.detail) in rig.reports  # what the status report says
    assert not [p for p, _ in rig.server.requests[requests:] if "/model.tflite" in p]
    assert_serving(rig, 1)
    assert rig.updater().handle().step == "already_installed"


def test_replayed_older_metadata_is_refused(rig: Rig) -> None:
    """Case 3: a CDN (or an attacker) serving yesterday's repository."""
    v1, v2, _ = vibration_runs()
    rig.releases.release(1, v1)
    yesterday = dict(rig.server.files)
    rig.releases.release(2, v2, previous=1)
    assert rig.updater().handle().step == "succeeded"
    rig.server.files.clear()
    rig.server.files.update(yesterday)
    result = rig.updater().handle()
    assert result.step == "failed"
    assert "BadVersionNumber" in result.detail
    assert_serving(rig, 2)


def test_a_freeze_attack_with_an_expired_manifest_is_refused_and_status_says_why(rig: Rig) -> None:
    """Case 4: a frozen CDN serves a timestamp that has expired."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.clock.now -= timedelta(hours=7)  # signed long enough ago to have expired
    rig.releases.release(2, v2)
    result = rig.updater().handle()
    assert result.step == "failed"
    assert "ExpiredMetadata" in result.detail
    assert result.retryable  # the next timestamp the schedule signs ends it
    step, _, detail = rig.reports[-1]
    assert step == "failed"
    assert "expired" in detail  # the status report says why
    assert_serving(rig, 1)


def test_a_manifest_signed_by_the_wrong_key_is_refused(rig: Rig) -> None:
    """Case 5: metadata signed by a key the shipped root does not name."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2)
    rig.server.files[TIMESTAMP] = _forged_timestamp(rig.server.files, CryptoSigner.generate_ecdsa())
    result = rig.updater().handle()
    assert result.step == "failed"
    assert "Unsigned" in result.detail
    assert_serving(rig, 1)
    assert rig.served(2, "model.tflite") == 0


def test_an_unsigned_manifest_is_refused(rig: Rig) -> None:
    """Case 5."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2)
    rig.server.files[TIMESTAMP] = _forged_timestamp(rig.server.files, None)
    result = rig.updater().handle()
    assert result.step == "failed"
    assert "Unsigned" in result.detail
    assert_serving(rig, 1)


def test_a_signature_over_different_bytes_is_refused(rig: Rig) -> None:
    """Case 5: a genuine signature moved onto other metadata."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2)
    genuine = Metadata.from_bytes(rig.server.files[TIMESTAMP])
    altered = Metadata.from_bytes(rig.server.files[TIMESTAMP])
    altered.signed.version += 1
    altered.signatures = genuine.signatures
    rig.server.files[TIMESTAMP] = altered.to_bytes()
    result = rig.updater().handle()
    assert result.step == "failed"
    assert "Unsigned" in result.detail
    assert rig.served(2, "model.tflite") == 0
    assert_serving(rig, 1)


def test_a_model_for_other_inputs_is_refused(rig: Rig) -> None:
    """Case 6: the input spec does not fit this device."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, mutate=with_fields(input=TensorSpec(shape=(-1, 9))))
    result = rig.updater().handle()
    assert result.step == "failed"
    assert "InputSpecMismatch" in result.detail
    assert rig.served(2, "model.tflite") == 0
    assert_serving(rig, 1)


def test_an_artifact_that_disagrees_with_the_manifest_hash_is_refused(rig: Rig) -> None:
    """Case 6: signed metadata, another (real, loadable) model at its path."""
    install_v1(rig)
    v1, v2, _ = vibration_runs()
    rig.releases.release(2, v2)
    assert v1.tflite is not None
    rig.server.files[rig.key(2, "model.tflite")] = v1.tflite
    result = rig.updater().handle()
    assert result.step == "failed"
    assert "LengthOrHashMismatch" in result.detail
    assert_serving(rig, 1)


def test_a_patch_made_against_another_base_falls_back_to_the_full_artifact(rig: Rig) -> None:
    """Case 6: the patch names the installed model as its base, but was made from another;
    the patched result is checked against the model target's hash."""
    install_v1(rig)
    _, v2, v3 = vibration_runs()
    assert v2.tflite is not None
    assert v3.tflite is not None
    installed = rig.store.current()
    assert installed is not None
    foreign = make_patch(v3.tflite, v2.tflite, "bsdiff4")
    claim = PatchRelease(1, installed.manifest.artifact.sha256, "bsdiff4", foreign)
    rig.releases.release(2, v2, patches=(claim,))
    result = rig.updater().handle()
    assert result.step == "succeeded", result.detail
    assert rig.served(2, "from-1.bsdiff4") == 1
    assert rig.served(2, "model.tflite") == 1
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
    manifest = rig.releases.release(2, v2, bases=[7])
    assert manifest.deltas
    result = rig.updater().handle()
    assert result.step == "succeeded", result.detail
    assert [p for p, _ in rig.server.requests if ".from-" in p] == []
    assert rig.served(2, "model.tflite") == 1
    assert_serving(rig, 2)


def test_another_models_validly_signed_manifest_is_refused(rig: Rig) -> None:
    """Finding 2 (#15): the online key signs every model's role; a spec naming another
    model is not installed here, whichever role signed it."""
    install_v1(rig)
    _, v2, v3 = vibration_runs()
    rig.releases.release(2, v3, spec_mutate=with_fields(model="pressure"))
    result = rig.updater().handle()
    assert result.step == "failed"
    assert "pressure" in result.detail
    assert rig.served(2, "model.tflite") == 0
    assert_serving(rig, 1)
    # The device's own next version installs.
    rig.releases.release(3, v2, previous=2)
    assert rig.updater().handle().step == "succeeded"


def test_another_models_pointer_offers_this_device_nothing(rig: Rig) -> None:
    """Finding 2 (#15): a device reads only its own model's pointer, in its model's role."""
    install_v1(rig)
    repo = rig.releases.repo()
    from edgeloop.trust import VersionRelease

    repo.publish(VersionRelease("pressure", 9, b"not for pumps"))
    repo.set_pointer(RolloutPointer("pressure", offered=9, previous=None, percent=100))
    rig.releases.sync()
    result = rig.updater().handle()
    assert result.step == "already_installed"
    assert result.version == 1
    assert not [p for p, _ in rig.server.requests if "/pressure/" in p]


def test_a_clock_behind_its_floor_does_not_accept_an_expired_manifest(rig: Rig) -> None:
    """Finding 3 (#15): a board without an RTC boots in the past; the newest created_at it
    installed (persisted) proves the time is later, so it does not refresh at all
    (expired metadata could look fresh to it) until the clock is set."""
    install_v1(rig)  # created now: the floor
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2)
    boot_clock = datetime.now(UTC) - timedelta(days=4, hours=12)
    rig.store = rig.reopen()  # the floor survives a restart
    assert rig.store.state.clock_floor is not None
    requests = len(rig.server.requests)
    result = rig.updater(clock=lambda: boot_clock).handle()
    assert result.step == "failed"
    assert "ClockBehind" in result.detail
    assert result.retryable
    assert rig.server.requests[requests:] == []
    assert_serving(rig, 1)


def test_a_manifest_created_in_the_future_is_not_installed_yet(rig: Rig) -> None:
    """Finding 3 (#15): retried later, since it is the device clock that is usually wrong."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    later = format_time(datetime.now(UTC) + timedelta(hours=2))
    rig.releases.release(2, v2, mutate=with_fields(created_at=later))
    result = rig.updater().handle()
    assert result.step == "failed"
    assert "ClockBehind" in result.detail
    assert result.retryable
    assert_serving(rig, 1)
    assert rig.served(2, "model.tflite") == 0


def test_an_announcement_with_a_4301_digit_version_does_not_stop_updates(world: World) -> None:
    """Finding 1 (#15): json.loads raises a plain ValueError on it. A nudge is never
    believed, so it is only a (logged) reason to refresh; the thread survives."""
    v1, _, _ = vibration_runs()
    agent = world.agent("pump-1", source=iter(()))
    agent.start(score=False)
    wait_for(lambda: agent.updates.refreshes >= 1, what="the refresh at start")
    world.releases.release(1, v1)
    huge = b'{"model": "vibration", "version": 1' + b"0" * 4300 + b"}"
    world.cloud.nudge("vibration", payload=huge)
    wait_for(lambda: agent.version == 1, what="v1 installed after the garbage nudge")
    assert agent.failure is None


def test_a_nudge_that_is_not_utf8_json_does_not_stop_updates(world: World) -> None:
    """Finding 1 (#15): it used to end the update thread with a UnicodeEncodeError."""
    v1, v2, _ = vibration_runs()
    agent = world.agent("pump-1", source=iter(()))
    agent.start(score=False)
    world.releases.release(1, v1)
    world.cloud.nudge_thing("pump-1", "modèle".encode("latin-1") + b"\xff")
    wait_for(lambda: agent.version == 1, what="v1 installed after the garbage nudge")
    world.releases.release(2, v2, previous=1)
    world.cloud.nudge("vibration", 2)
    wait_for(lambda: agent.version == 2, what="the next nudge still handled")
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
    rig.releases.release(2, v2)
    result = rig.updater(probe=_probe_running(child, timeout=1.0)).handle()
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
    rig.releases.release(2, v2, model_bytes=broken)
    result = rig.updater().handle()
    assert result.step == "failed"
    assert result.detail.startswith(("ModelLoadError", "ModelCrashed")), result.detail
    assert_serving(rig, 1)


class DiesWhileTrying:
    """The agent's process dies while the new model is being tried (a crash the child
    did not reproduce, in the agent's own load or first inference)."""

    def check(self, model: bytes, n_features: int, checks: list[dict[str, Any]]) -> ProbeVerdict:
        raise PowerCut("the agent died trying the model")


def test_a_crash_while_trying_a_model_refuses_it_after_restart_without_a_loop(rig: Rig) -> None:
    """Finding 6 (#15): the persisted "attempting v2" marker; v2, still offered by the
    pointer, is not tried again on the next start."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2)
    with pytest.raises(PowerCut):
        rig.updater(probe=DiesWhileTrying()).handle()
    rig.store = rig.reopen()  # the restart
    assert rig.store.state.attempting is None
    assert 2 in rig.store.state.refused
    result = rig.updater().handle()
    assert result.step == "failed"
    assert "RefusedBefore" in result.detail
    assert_serving(rig, 1)
    rig.releases.release(3, v2, previous=2)
    assert rig.updater().handle().step == "succeeded"


def test_a_manifest_without_health_checks_is_refused(rig: Rig) -> None:
    """Finding 10 (#15): a model the device cannot try first is not installed."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, bare=True)
    result = rig.updater().handle()
    assert result.step == "failed"
    assert "Unchecked" in result.detail
    assert rig.served(2, "model.tflite") == 0
    assert_serving(rig, 1)


def test_a_patch_declared_over_the_size_cap_is_never_fetched(rig: Rig) -> None:
    """Finding 10 (#15): patches are capped by max_bytes like the model."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    assert v2.tflite is not None
    installed = rig.store.current()
    assert installed is not None
    cap = len(v2.tflite) + 1  # the model fits, a patch bigger than that does not
    huge = PatchRelease(1, installed.manifest.artifact.sha256, "bsdiff4", b"\0" * (cap + 1))
    rig.releases.release(2, v2, patches=(huge,))
    repository = rig.repository()
    result = rig.updater(
        repository=repository, sources=model_sources(repository, cap), max_bytes=cap
    ).handle()
    assert result.step == "succeeded", result.detail
    assert rig.served(2, "from-1.bsdiff4") == 0
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
    rig.releases.release(2, v1, model_bytes=bytes(hangs))
    started = time.monotonic()
    result = rig.updater(probe=ChildProcessProbe(timeout=2.0)).handle()
    assert result.step == "failed"
    assert result.detail.startswith("ModelTooSlow"), result.detail
    assert time.monotonic() - started < 10
    assert_serving(rig, 1)


# --- the trust layer's own cases, at the agent ------------------------------------


def test_an_aborted_canary_version_replayed_on_the_all_topic_is_refused(world: World) -> None:
    """A canary version keeps its signature, but only the pointer says who runs it: its
    nudge replayed on every band's topic installs nothing on a device the pointer does not
    name, and once the rollout is aborted not even on the canary that missed it."""
    v1, v2, _ = vibration_runs()
    world.releases.release(1, v1)
    pump = world.agent("pump-1", source=iter(()))
    canary = world.agent("canary-7", source=iter(()))
    for agent in (pump, canary):
        agent.start(score=False)
    wait_for(lambda: pump.version == canary.version == 1, what="v1 everywhere")
    canary.stop()  # offline while v2 goes to the named canaries
    world.agents.remove(canary)
    world.releases.release(2, v2, offer=False)
    repo = world.releases.repo()
    repo.set_pointer(RolloutPointer("vibration", 2, 1, percent=0, canaries=("canary-7",)))
    world.releases.sync()
    canary_nudge = b'{"model":"vibration","version":2}'
    world.cloud.nudge_thing("canary-7", canary_nudge)
    refreshes = pump.updates.refreshes
    world.cloud.nudge("vibration", payload=canary_nudge)  # the replay, on every band
    wait_for(lambda: pump.updates.refreshes > refreshes, what="the refresh the replay caused")
    wait_for(lambda: pump.step == "already_installed", what="the refresh's outcome")
    assert pump.version == 1
    repo.withdraw("vibration", 2, back_to=1)  # the abort
    world.releases.sync()
    back = world.agent("canary-7", source=iter(()))  # comes back, hears the retained nudge
    back.start(score=False)
    wait_for(lambda: back.updates.refreshes >= 1, what="the canary's refresh")
    wait_for(lambda: back.step == "already_installed", what="the canary's refresh outcome")
    assert back.version == 1
    assert not [p for p, _ in world.server.requests if "/vibration/2/" in p]


def test_an_agent_offline_across_two_root_rotations_and_an_online_key_rotation_updates(
    world: World,
) -> None:
    v1, v2, _ = vibration_runs()
    world.releases.release(1, v1)
    agent = world.agent("pump-1", source=iter(()))
    agent.start(score=False)
    wait_for(lambda: agent.version == 1, what="v1 installed")
    agent.stop()  # offline, with root v1 trusted on disk
    world.releases.rotate_root_key(0)
    world.releases.rotate_root_key(1)
    world.releases.rotate_online_key()
    world.releases.release(2, v2, previous=1)
    assert world.releases.ceremony().trusted().signed.version == 4
    back = world.agent("pump-1", source=iter(()))  # the same state directory
    back.start(score=False)
    wait_for(lambda: back.version == 2, what="v2 installed after walking root v2..v4")
    assert (world.tmp / "state-pump-1" / "trust" / "metadata" / "root.json").read_bytes() == (
        world.releases.store.get("tuf/metadata/4.root.json")
    )


def test_metadata_signed_by_a_retired_online_key_is_refused_by_the_agent(world: World) -> None:
    v1, v2, _ = vibration_runs()
    world.releases.release(1, v1)
    agent = world.agent("pump-1", source=iter(()))
    agent.start(score=False)
    wait_for(lambda: agent.version == 1, what="v1 installed")
    retired = world.releases.rotate_online_key(resign=False)
    # What the retired key still signs: a new timestamp over the old snapshot.
    world.server.files[TIMESTAMP] = _forged_timestamp(world.server.files, retired)
    world.cloud.nudge("vibration", 2)
    wait_for(lambda: "Unsigned" in _status(world, "pump-1").get("detail", ""))
    assert _status(world, "pump-1")["health"] == "degraded"
    assert agent.version == 1
    assert not [p for p, _ in world.server.requests if "/vibration/2/" in p]
    del v2


def test_one_root_key_alone_cannot_rotate_root_on_the_agent(world: World) -> None:
    v1, _, _ = vibration_runs()
    world.releases.release(1, v1)
    agent = world.agent("pump-1", source=iter(()))
    agent.start(score=False)
    wait_for(lambda: agent.version == 1, what="v1 installed")
    ceremony = world.releases.ceremony()
    intruder = CryptoSigner.generate_ecdsa()
    ceremony.replace_root_key(world.releases.root_keys[1].public_key.keyid, intruder.public_key)
    assert not ceremony.sign_pending(world.releases.root_keys[0]).complete
    assert not ceremony.sign_pending(intruder).complete
    pending = world.releases.store.get("tuf/pending/2.root.json")
    assert pending is not None
    world.server.files[REPOSITORY_PREFIX + "tuf/metadata/2.root.json"] = pending
    world.cloud.nudge("vibration", 1)
    wait_for(lambda: "root" in _status(world, "pump-1").get("detail", ""))
    status = _status(world, "pump-1")
    assert status["step"] == "failed"
    assert "Unsigned" in status["detail"]
    assert agent.version == 1
    trusted = json.loads(
        (world.tmp / "state-pump-1" / "trust" / "metadata" / "root.json").read_bytes()
    )
    assert trusted["signed"]["version"] == 1


def test_an_expired_timestamp_is_reported_by_the_agent_and_the_old_model_keeps_serving(
    world: World,
) -> None:
    """A frozen CDN: the agent says so in its status (failed, degraded, why) and scores on."""
    v1, _, _ = vibration_runs()
    world.releases.release(1, v1)
    agent = world.agent("pump-1", source=iter(()))
    agent.start(score=False)
    wait_for(lambda: agent.version == 1, what="v1 installed")
    world.releases.clock.now -= timedelta(hours=7)
    world.releases.repo().resign_due()  # the newest timestamp there is expired an hour ago
    world.releases.sync()
    world.cloud.nudge("vibration", 1)
    wait_for(lambda: "ExpiredMetadata" in _status(world, "pump-1").get("detail", ""))
    status = _status(world, "pump-1")
    assert (status["step"], status["health"], status["version"]) == ("failed", "degraded", 1)
    assert "expired" in status["detail"]
    assert agent.version == 1
    without_model = agent.counters.scored_without_model
    agent.process(Sample(np.zeros(8, dtype=np.float32)))
    assert agent.counters.scored_without_model == without_model  # v1 scored it
