"""The nudge carries the repository's metadata, the spec and the patch, and trusts none of it.

A nudged device asks the CDN only for the timestamp. The root probe is answered
on the device (a root rotation is found by the refresh that fails without it,
and by every timer refresh). The timestamp never rides: it is what tells a
replayed nudge (from before an abort) from the repository's newest state.
Whatever the nudge carries is handed to ngclient as if the CDN had sent it, and
used only where the fresh timestamp leads to that very file: a forged, stale or
replayed copy is refused there or never reached, the device refreshes from the
CDN alone, and updates (or refuses, when the CDN is bad too) exactly as it would
have without it.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest

from edgeloop.contract import IOT_MESSAGE_UNIT, CarriedFile, Nudge, ThingTopics, announcement
from edgeloop.contract.trust_targets import REPOSITORY_PREFIX, RolloutPointer
from functions.common.rollouts import nudge_budget
from tests.support_release import MODEL, vibration_runs
from tests.support_rig import Rig, assert_serving, install_v1
from tests.support_world import World, wait_for

ROOT_PROBE = REPOSITORY_PREFIX + "tuf/metadata/2.root.json"
TIMESTAMP = REPOSITORY_PREFIX + "tuf/metadata/timestamp.json"
BAND = announcement(MODEL, 7)


def _nudge(rig: Rig, version: int, topic: str = BAND) -> Nudge:
    """What Rollouts publishes on `topic` once the pointer names `version`."""
    files = rig.releases.repo().nudge_files(MODEL, version)
    return Nudge.filled(MODEL, version, files, nudge_budget(topic))


def _asked(rig: Rig, since: int) -> list[str]:
    """What the CDN was asked for since request number `since`, 404s included."""
    return [path for path, _ in rig.server.requests[since:]]


def _tampered(nudge: Nudge, path_part: str) -> Nudge:
    """The nudge with one byte of a carried file flipped."""
    changed = []
    for path, data in nudge.carried:
        if path_part in path:
            flipped = bytearray(data)
            flipped[len(flipped) // 2] ^= 0x01
            data = bytes(flipped)
        changed.append(CarriedFile(path, data))
    return Nudge(nudge.model, nudge.version, tuple(changed))


def _trusted(rig: Rig, role: str) -> bytes:
    return (rig.root / "trust" / "metadata" / f"{role}.json").read_bytes()


def test_a_nudged_update_asks_the_cdn_only_for_the_timestamp(rig: Rig) -> None:
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, bases=[1], previous=1)
    nudge = _nudge(rig, 2)
    payload = nudge.to_bytes()
    assert len(payload) + len(BAND) <= IOT_MESSAGE_UNIT
    assert [p.split("/")[-1].split(".", 1)[-1] for p, _ in nudge.carried] == [
        "snapshot.json",
        "vibration.json",
        "spec.json",
        "from-1.wdiff",
    ]
    before = len(rig.server.requests)
    result = rig.updater().handle("nudge", Nudge.from_bytes(payload).files)
    assert result.step == "succeeded", result.detail
    assert _asked(rig, before) == [TIMESTAMP]
    assert_serving(rig, 2)
    # The update's log line says what it cost the link, the nudge's share apart.
    in_nudge = sum(len(data) for _, data in nudge.carried)
    timestamp = len(rig.server.files[TIMESTAMP])
    assert result.detail == (
        f"running v2: {timestamp + in_nudge} B received "
        f"({timestamp} B from the CDN, {in_nudge} B in the nudge)"
    )


def test_a_nudged_refresh_after_an_online_key_rotation_finds_the_new_root_at_the_cdn(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """The root probe the nudge skips is what finds a rotated root: the CDN's fresh
    timestamp, signed by the new online key, fails against the trusted root, and the
    same refresh starts over from the CDN with the probe."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.rotate_online_key()
    rig.releases.release(2, v2, bases=[1], previous=1)
    before = len(rig.server.requests)
    with caplog.at_level(logging.WARNING, logger="edge.trust"):
        result = rig.updater().handle("nudge", _nudge(rig, 2).files)
    assert result.step == "succeeded", result.detail
    assert "event=nudge_metadata_refused" in caplog.text
    asked = _asked(rig, before)
    assert asked[0] == TIMESTAMP  # the nudged try: no probe
    assert ROOT_PROBE in asked  # the start over: the probe, and root 2 found
    assert json.loads(_trusted(rig, "root"))["signed"]["version"] == 2
    assert_serving(rig, 2)


def test_a_timer_refresh_always_probes_for_the_next_root(rig: Rig) -> None:
    """A root rotated for its own keys alone leaves the online key valid, so a nudged
    refresh verifies under the old root; the next refresh without a nudge probes."""
    install_v1(rig)
    rig.releases.rotate_root_key(0)
    rig.releases.sync()
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, bases=[1], previous=1)
    before = len(rig.server.requests)
    assert rig.updater().handle("nudge", _nudge(rig, 2).files).step == "succeeded"
    assert ROOT_PROBE not in _asked(rig, before)
    assert json.loads(_trusted(rig, "root"))["signed"]["version"] == 1
    before = len(rig.server.requests)
    assert rig.updater().handle("timer").step == "already_installed"
    assert _asked(rig, before)[0] == ROOT_PROBE
    assert json.loads(_trusted(rig, "root"))["signed"]["version"] == 2


def test_a_replayed_nudge_from_before_an_abort_never_installs_the_aborted_version(
    rig: Rig,
) -> None:
    """Finding 2 (#24): v2's nudge, captured with everything it could carry (its
    timestamp too, valid for hours), replayed to a device on v1 after v2 was aborted.
    The device takes the timestamp from the CDN only, so it sees the abort: v1 stays."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, bases=[1], previous=1)
    stamp = CarriedFile("tuf/metadata/timestamp.json", rig.server.files[TIMESTAMP])
    captured = _nudge(rig, 2)
    captured = Nudge(MODEL, 2, (stamp, *captured.carried))
    rig.releases.repo().withdraw(MODEL, 2, back_to=1)  # the abort
    rig.releases.sync()
    before = len(rig.server.requests)
    result = rig.updater().handle("nudge", captured.files)
    assert result.step == "already_installed", result.detail
    assert TIMESTAMP in _asked(rig, before)
    assert not [p for p in _asked(rig, before) if "/vibration/2/" in p]
    assert_serving(rig, 1)


def test_without_carried_files_the_same_update_asks_the_cdn_six_times(rig: Rig) -> None:
    """The baseline the nudge's files remove: root probe, timestamp, snapshot, role,
    spec, patch."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, bases=[1], previous=1)
    before = len(rig.server.requests)
    assert rig.updater().handle("nudge").step == "succeeded"
    asked = _asked(rig, before)
    assert len(asked) == 6, asked
    assert asked[0] == ROOT_PROBE
    assert asked[-1] == rig.key(2, "from-1.wdiff")


def test_a_tampered_role_in_the_nudge_is_refused_and_the_cdn_updates_the_device(
    rig: Rig,
) -> None:
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, bases=[1], previous=1)
    forged = _tampered(_nudge(rig, 2), ".vibration.json")
    before = len(rig.server.requests)
    result = rig.updater().handle("nudge", forged.files)
    assert result.step == "succeeded", result.detail
    role_path = next(p for p, _ in forged.carried if p.endswith(".vibration.json"))
    assert REPOSITORY_PREFIX + role_path in _asked(rig, before)  # fetched again from the CDN
    assert _trusted(rig, MODEL) == rig.server.files[REPOSITORY_PREFIX + role_path]
    assert_serving(rig, 2)


def test_a_tampered_nudge_and_a_tampered_cdn_are_both_refused(rig: Rig) -> None:
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, bases=[1], previous=1)
    forged = _tampered(_nudge(rig, 2), ".vibration.json")
    role_path = REPOSITORY_PREFIX + next(
        p for p, _ in forged.carried if p.endswith(".vibration.json")
    )
    rig.server.files[role_path] = forged.files[role_path[len(REPOSITORY_PREFIX) :]]
    result = rig.updater().handle("nudge", forged.files)
    assert result.step == "failed"
    assert "Length" in result.detail or "Unsigned" in result.detail, result.detail
    assert rig.served(2, "from-1.wdiff") == 0
    assert_serving(rig, 1)


def test_a_tampered_spec_in_the_nudge_is_refused_and_fetched_from_the_cdn(rig: Rig) -> None:
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, bases=[1], previous=1)
    forged = _tampered(_nudge(rig, 2), ".spec.json")
    before = len(rig.server.requests)
    result = rig.updater().handle("nudge", forged.files)
    assert result.step == "succeeded", result.detail
    assert rig.key(2, "spec.json") in _asked(rig, before)
    assert_serving(rig, 2)


def test_a_retained_nudge_whose_timestamp_expired_falls_back_to_the_cdn(rig: Rig) -> None:
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.clock.now -= timedelta(hours=7)
    rig.releases.release(2, v2, bases=[1], previous=1)
    retained = _nudge(rig, 2)  # signed seven hours ago: its timestamp has expired
    rig.releases.clock.now += timedelta(hours=7)
    rig.releases.repo().resign_due()  # the schedule's fresh timestamp, on the CDN
    rig.releases.sync()
    before = len(rig.server.requests)
    result = rig.updater().handle("nudge", retained.files)
    assert result.step == "succeeded", result.detail
    assert REPOSITORY_PREFIX + "tuf/metadata/timestamp.json" in _asked(rig, before)
    assert (
        _trusted(rig, "timestamp")
        == rig.server.files[REPOSITORY_PREFIX + "tuf/metadata/timestamp.json"]
    )
    assert_serving(rig, 2)


def test_a_nudge_older_than_the_trusted_timestamp_falls_back_and_still_updates(rig: Rig) -> None:
    install_v1(rig)
    old = _nudge(rig, 1)  # retained since v1's rollout
    rig.releases.repo().resign_due()  # a newer timestamp, which the device then trusts
    rig.releases.sync()
    assert rig.updater().handle("timer").step == "already_installed"
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, bases=[1], previous=1)
    result = rig.updater().handle("nudge", old.files)
    assert result.step == "succeeded", result.detail
    assert_serving(rig, 2)


def test_a_replayed_old_nudge_cannot_roll_a_device_back(rig: Rig) -> None:
    """The nudge of v1's rollout, replayed once the device runs v2: its metadata is older
    than what the device trusts, so ngclient refuses it, and the CDN says v2."""
    v1, v2, _ = vibration_runs()
    rig.releases.release(1, v1)
    old = _nudge(rig, 1)
    assert rig.updater().handle("nudge", old.files).step == "succeeded"
    rig.releases.release(2, v2, bases=[1], previous=1)
    assert rig.updater().handle("nudge", _nudge(rig, 2).files).step == "succeeded"
    trusted = json.loads(_trusted(rig, "timestamp"))["signed"]["version"]
    result = rig.updater().handle("nudge", old.files)
    assert result.step == "already_installed", result.detail
    assert json.loads(_trusted(rig, "timestamp"))["signed"]["version"] >= trusted
    assert_serving(rig, 2)


def test_a_carried_set_over_one_iot_unit_is_trimmed_and_the_update_works(rig: Rig) -> None:
    """Thirty-two named canaries with long names make the role too big to ride along:
    the role is left to the CDN, the smaller files still ride, the update works."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, bases=[1], offer=False)
    canaries = tuple(f"pump-{i:02d}-" + "x" * 110 for i in range(32))
    rig.releases.repo().set_pointer(RolloutPointer(MODEL, 2, 1, percent=100, canaries=canaries))
    rig.releases.sync()
    topic = ThingTopics(canaries[0]).nudge
    files = rig.releases.repo().nudge_files(MODEL, 2)
    assert sum(len(f.data) for f in files) + len(topic) > IOT_MESSAGE_UNIT
    nudge = _nudge(rig, 2, topic)
    assert len(nudge.to_bytes()) + len(topic) <= IOT_MESSAGE_UNIT
    carried = [p for p, _ in nudge.carried]
    assert not [p for p in carried if p.endswith(".vibration.json")]  # the role: CDN
    assert [p for p in carried if p.endswith(".spec.json")]  # the spec still fits
    before = len(rig.server.requests)
    result = rig.updater().handle("nudge", nudge.files)
    assert result.step == "succeeded", result.detail
    asked = _asked(rig, before)
    assert asked[0] == TIMESTAMP
    assert len(asked) == 2
    assert asked[1].endswith(".vibration.json")
    assert_serving(rig, 2)


def test_a_carried_file_over_its_signed_length_is_refused_and_the_cdn_answers(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A carried patch padded past the length the role signs is cut off as the CDN's
    would be, before a byte of it is applied, and the CDN's copy is fetched."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, bases=[1], previous=1)
    nudge = _nudge(rig, 2)
    padded = tuple(
        CarriedFile(path, data + b"\0" * 5000) if path.endswith(".wdiff") else (path, data)
        for path, data in nudge.carried
    )
    before = len(rig.server.requests)
    with caplog.at_level(logging.WARNING, logger="edge.trust"):
        result = rig.updater().handle("nudge", Nudge(MODEL, 2, padded).files)  # type: ignore[arg-type]
    assert result.step == "succeeded", result.detail
    assert "event=nudge_target_refused" in caplog.text
    assert rig.key(2, "from-1.wdiff") in _asked(rig, before)
    assert_serving(rig, 2)


def test_an_agent_nudged_over_mqtt_asks_the_cdn_only_for_the_timestamp(
    world: World,
) -> None:
    v1, v2, _ = vibration_runs()
    world.releases.release(1, v1)
    agent = world.agent("pump-1", source=iter(()))
    agent.start(score=False)
    wait_for(lambda: agent.version == 1, what="v1 installed at start")
    wait_for(lambda: agent.step == "succeeded", what="the first update's end")
    world.releases.release(2, v2, bases=[1], previous=1)
    files = world.releases.repo().nudge_files(MODEL, 2)
    topic = announcement(MODEL, 0)
    before = len(world.server.requests)
    world.cloud.nudge(MODEL, payload=Nudge.filled(MODEL, 2, files, nudge_budget(topic)).to_bytes())
    wait_for(lambda: agent.version == 2, what="v2 installed on the carrying nudge")
    asked = [path for path, _ in world.server.requests[before:]]
    assert asked == [TIMESTAMP]


def test_a_refresh_without_a_nudge_that_finds_nothing_asks_the_cdn_twice(rig: Rig) -> None:
    """What a device at rest pays per `refresh_interval` (bench.fleet.at_rest counts it):
    the root probe and the timestamp; nothing else when nothing changed."""
    install_v1(rig)
    before = len(rig.server.requests)
    assert rig.updater().handle("timer").step == "already_installed"
    assert _asked(rig, before) == [ROOT_PROBE, TIMESTAMP]


def test_a_carried_snapshot_other_than_the_one_the_fresh_timestamp_names_is_refused(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """The nudged refresh skips the root probe, so a device may still trust keys a
    newer root revoked. A snapshot validly signed by such a key, with the very version
    and length the CDN's fresh timestamp names, must still not stand in for the real
    one: the timestamp pins its hash, and the refresh starts over from the CDN."""
    from tuf.api.metadata import Metadata, Snapshot
    from tuf.api.serialization.json import JSONSerializer

    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, bases=[1], previous=1)
    nudge = _nudge(rig, 2)
    [(path, real)] = [(p, d) for p, d in nudge.carried if p.endswith(".snapshot.json")]
    for _ in range(50):  # an ECDSA signature's length varies: keep the file's length
        forged = Metadata[Snapshot].from_bytes(real)
        forged.signed.expires += timedelta(seconds=1)
        forged.sign(rig.releases.online, append=False)
        data = forged.to_bytes(JSONSerializer(compact=True))
        if len(data) == len(real) and data != real:
            break
    else:
        pytest.fail("no forged snapshot of the real one's length")
    carried = tuple(CarriedFile(p, data if p == path else d) for p, d in nudge.carried)
    before = len(rig.server.requests)
    with caplog.at_level(logging.WARNING, logger="edge.trust"):
        result = rig.updater().handle("nudge", Nudge(MODEL, 2, carried).files)
    assert result.step == "succeeded", result.detail
    assert "event=nudge_metadata_refused" in caplog.text
    assert REPOSITORY_PREFIX + path in _asked(rig, before)
    assert _trusted(rig, "snapshot") == real
