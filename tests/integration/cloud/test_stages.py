"""Staged rollouts against the local AWS: what issue #17's acceptance asks of them.

A device cannot choose its stage, an empty stage does not stall silently, a
duplicate report counts once, the operator pauses, resumes and aborts from the
command line, and each report costs the same few requests whatever the fleet's size.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edgeloop.cli.main import main
from edgeloop.contract import Health, StagePlan, StatusReport, format_time, utc_now
from functions.common.clients import client
from functions.common.fleet import DeviceRecord, FleetTable
from functions.common.wiring import rollouts
from functions.evaluate_rollouts import handler as evaluate_rollouts
from tests.support_aws import (
    NAMED_CANARIES,
    ROSTER,
    FakeLambdaContext,
    LocalCloud,
    deliver_counted,
    nudge,
    publish_test_version,
    report_heartbeat,
    report_status,
    start_test_rollout,
)


def evaluate() -> dict[str, str]:
    """What the schedule's run decided (it also re-signs the timestamp each time)."""
    decided: dict[str, str] = evaluate_rollouts.handler({}, FakeLambdaContext())["decided"]
    return decided


def stage_of() -> int:
    """The stage vibration's rollout is at."""
    rollout = rollouts().get("vibration")
    assert rollout is not None
    return rollout.stage


# --- a device cannot choose its stage -----------------------------------------------------


@pytest.mark.parametrize("claim", [{"stage": 0}, {"ring": "canary"}, {"canary": True}])
def test_a_report_naming_its_own_stage_is_ignored_with_the_reason(
    cloud: LocalCloud, claim: dict[str, Any]
) -> None:
    """pump-10 is in stage 3: saying it is a canary must not make its install count now."""
    registry = start_test_rollout(cloud)
    result = report_status("pump-10", **claim)
    assert result["recorded"] is False
    assert f"status.{next(iter(claim))}: unknown key" in result["reason"]
    assert registry.stage_counts("vibration", 2, 0) == {"installed": 0, "failed": 0}


def test_devices_outside_the_current_stage_do_not_count(cloud: LocalCloud) -> None:
    """Finding 4 of the data-trust issue, on stages: pump-10..12 (stages 3, 4, 4) report
    installing, then failing, the version while it is offered to the named canaries only."""
    registry = start_test_rollout(cloud)
    for thing in ("pump-10", "pump-11", "pump-12"):
        assert report_status(thing)["counted"] is False
        assert report_status(thing, version=1, health="degraded", step="failed")["counted"] is False
    for stage in range(5):
        assert registry.stage_counts("vibration", 2, stage) == {"installed": 0, "failed": 0}
    assert stage_of() == 0
    # The named canaries move it on, as the registry's canary group says they may.
    assert report_status("pump-1")["counted"] is True
    assert report_status("pump-2")["counted"] is True
    assert deliver_counted(cloud) == {"vibration": "stage 3"}


def test_a_devices_stage_is_its_thing_names_and_the_canary_groups(cloud: LocalCloud) -> None:
    """Which stage a report counts toward follows from the topic's thing name and the
    thing registry's canary group, both the cloud's: joining the group (an operator's
    act) makes pump-10 a stage-0 device, where nothing it says could."""
    start_test_rollout(cloud)
    plan = StagePlan()
    for thing, model, _ in ROSTER:
        if model == "vibration":
            report_heartbeat(thing)
    fleet = FleetTable(cloud.client("dynamodb"), cloud.names["FLEET_TABLE"])
    assert {r.thing: r.stage for r in fleet.for_model("vibration")} == {
        thing: plan.stage_of(thing, canary)
        for thing, model, canary in ROSTER
        if model == "vibration"
    }
    assert report_status("pump-10")["counted"] is False
    cloud.enroll("pump-10", "vibration", canary=True)
    cloud.new_container()  # the identity cache of the old container would keep it for minutes
    assert report_status("pump-10")["counted"] is True
    assert fleet.get("pump-10").stage == 0  # type: ignore[union-attr]


# --- an empty stage does not stall silently -----------------------------------------------


def test_stages_without_devices_are_skipped_and_say_so(cloud: LocalCloud) -> None:
    """digits has no named canaries, and its only device that ever reported, pump-7, is in
    stage 3: the rollout goes straight there, with each skipped stage in its history."""
    report_heartbeat("pump-7", model="digits", version=None, health="no_model")
    publish_test_version(cloud, 1, "digits")
    assert rollouts().start("digits", 1)
    rollout = rollouts().get("digits")
    assert rollout is not None
    assert (rollout.state, rollout.stage, rollout.needed) == ("rolling", 3, 1)
    assert [(e["stage"], e["event"], e["detail"]) for e in rollout.history] == [
        (0, "started", "v1"),
        (0, "stage skipped", "no named canaries"),
        (1, "stage skipped", "no device of this stage has reported yet"),
        (2, "stage skipped", "no device of this stage has reported yet"),
        (3, "stage entered", "needs 1 installs"),
    ]
    assert sorted(cloud.band_offers("digits")) == list(range(50))


def test_a_stage_with_fewer_devices_than_it_needs_advances_on_all_of_them(
    cloud: LocalCloud,
) -> None:
    """Stage 3 has one device that ever reported (pump-10) and the plan asks for two
    installs: it needs the one it has, instead of waiting for a second forever."""
    report_heartbeat("pump-10", version=1)
    start_test_rollout(cloud)
    report_status("pump-1")
    report_status("pump-2")
    assert deliver_counted(cloud) == {"vibration": "stage 3"}
    rollout = rollouts().get("vibration")
    assert rollout is not None
    assert (rollout.stage, rollout.needed) == (3, 1)
    report_status("pump-10")
    assert deliver_counted(cloud) == {"vibration": "stage 4"}


def test_a_stage_whose_devices_never_report_stalls_with_the_counts(
    cloud: LocalCloud, capsys: pytest.CaptureFixture[str]
) -> None:
    report_heartbeat("pump-10", version=1)
    start_test_rollout(cloud)
    report_status("pump-1")
    report_status("pump-2", version=1, health="degraded", step="failed")
    report_status("pump-3")
    assert deliver_counted(cloud) == {"vibration": "stage 3"}
    assert stage_of() == 3
    later = datetime.now(UTC) + timedelta(minutes=61)
    assert rollouts().evaluate("vibration", now=later) == "stalled"
    rollout = rollouts().get("vibration")
    assert rollout is not None
    assert rollout.reason.startswith(
        "stage 3 (50%): 0 of 1 installs needed within 60 min (0 failed); "
        "the others have not reported the version"
    )
    assert rollout.history[-1]["event"] == "stalled"
    # The operator sees why, from the command line.
    capsys.readouterr()
    assert rollout_cli(cloud, "status") == 0
    printed = capsys.readouterr().out
    assert "vibration v2: stalled at stage 3 (50% of the fleet)" in printed
    assert "why: stage 3 (50%): 0 of 1 installs needed" in printed


# --- a duplicate report counts once ---------------------------------------------------------


def test_a_duplicate_report_counts_once(cloud: LocalCloud) -> None:
    registry = start_test_rollout(cloud)
    assert report_status("pump-1")["counted"] is True
    assert report_status("pump-1")["counted"] is False
    assert registry.stage_counts("vibration", 2, 0) == {"installed": 1, "failed": 0}
    # A heartbeat in between rewrites the device's item, not what it counted.
    assert report_heartbeat("pump-1")["counted"] is False
    assert report_status("pump-1")["counted"] is False
    assert registry.stage_counts("vibration", 2, 0) == {"installed": 1, "failed": 0}
    assert deliver_counted(cloud) == {}  # the counter changed once: evaluated, not moved
    assert stage_of() == 0  # one device, however often it says so, is not two
    fleet = FleetTable(cloud.client("dynamodb"), cloud.names["FLEET_TABLE"])
    assert fleet.get("pump-1").report.step == "succeeded"  # type: ignore[union-attr]
    report_status("pump-2")
    assert deliver_counted(cloud) == {"vibration": "stage 4"}


def test_a_device_counts_again_for_the_next_version(cloud: LocalCloud) -> None:
    """Once per device and version: the note of what it counted does not block v3."""
    registry = start_test_rollout(cloud)
    report_status("pump-1")
    report_status("pump-2")
    assert deliver_counted(cloud) == {"vibration": "stage 4"}
    evaluate_rollouts.handler({}, FakeLambdaContext())  # the empty last stage completes
    publish_test_version(cloud, 3)
    assert rollouts().start("vibration", 3)
    assert report_status("pump-1", version=3, target_version=3)["counted"] is True
    assert registry.stage_counts("vibration", 3, 0) == {"installed": 1, "failed": 0}


# --- the operator, from the command line --------------------------------------------------


def rollout_cli(cloud: LocalCloud, action: str, *extra: str) -> int:
    return main(
        [
            "rollout",
            action,
            "--model",
            "vibration",
            "--table",
            cloud.names["REGISTRY_TABLE"],
            "--endpoint-url",
            cloud.endpoint,
            *extra,
        ]
    )


def test_pause_resume_and_abort_from_the_command_line(
    cloud: LocalCloud, capsys: pytest.CaptureFixture[str]
) -> None:
    report_heartbeat("pump-10", version=1)
    registry = start_test_rollout(cloud, previous=True)
    report_status("pump-1")
    capsys.readouterr()

    assert rollout_cli(cloud, "pause", "--json") == 0
    assert json.loads(capsys.readouterr().out)["state"] == "paused"
    assert registry.rollout("vibration")["state"] == "paused"  # type: ignore[index]
    # Paused: installs still count, but nothing moves the rollout on.
    assert report_status("pump-2") == {"recorded": True, "counted": True}
    assert deliver_counted(cloud) == {}
    assert evaluate() == {}
    assert stage_of() == 0
    assert cloud.band_offers("vibration") == {}
    assert rollout_cli(cloud, "pause") == 1  # not rolling: refused, and says why
    assert "cannot pause the v2 rollout of vibration: it is paused" in capsys.readouterr().err

    assert rollout_cli(cloud, "resume") == 0
    assert registry.rollout("vibration")["state"] == "rolling"  # type: ignore[index]
    # The schedule evaluates what counted meanwhile.
    assert evaluate() == {"vibration": "stage 3"}
    assert cloud.band_offers("vibration") == dict.fromkeys(range(50), nudge("vibration", 2))

    capsys.readouterr()
    assert rollout_cli(cloud, "abort") == 0
    assert "vibration v2: aborted at stage 3" in capsys.readouterr().out
    aborted = rollouts().get("vibration")
    assert aborted is not None
    assert (aborted.state, aborted.reason) == ("aborted", "aborted by the operator")
    assert [
        e["event"] for e in aborted.history if e["event"] in ("paused", "resumed", "aborted")
    ] == [
        "paused",
        "resumed",
        "aborted",
    ]
    # The command line only writes the decision; the schedule publishes it: the
    # previous version again on every band the rollout reached, and to each named canary.
    assert aborted.publish is not None
    evaluate_rollouts.handler({}, FakeLambdaContext())
    assert cloud.band_offers("vibration") == dict.fromkeys(range(50), nudge("vibration", 1))
    assert cloud.thing_offers(NAMED_CANARIES) == dict.fromkeys(
        NAMED_CANARIES, nudge("vibration", 1)
    )
    assert rollouts().get("vibration").publish is None  # type: ignore[union-attr]
    assert rollout_cli(cloud, "resume") == 1  # aborted is final


# --- O(1) per report -------------------------------------------------------------------------


def count_requests(dynamodb: Any) -> Callable[[], Counter[str]]:
    """Count the requests the functions' DynamoDB client makes, by operation."""
    seen: Counter[str] = Counter()

    def before_call(model: Any, **_: Any) -> None:
        seen[model.name] += 1

    dynamodb.meta.events.register("before-call.dynamodb", before_call)

    def take() -> Counter[str]:
        taken = Counter(seen)
        seen.clear()
        return taken

    return take


def test_each_report_costs_the_same_requests_at_50_and_500_devices(cloud: LocalCloud) -> None:
    """digits with one stage after the (absent) named canaries: the whole fleet. Each
    report, outcome or heartbeat, is measured at both fleet sizes."""
    (cloud.config_dir / "digits.toml").write_text(
        (cloud.config_dir / "digits.toml").read_text()
        + "\n[rollout]\nstages = [100]\nhealthy_to_advance = 100000\n"
    )
    cloud.new_container()
    fleet = FleetTable(cloud.client("dynamodb"), cloud.names["FLEET_TABLE"])
    take = count_requests(client("dynamodb"))

    def grow_to(size: int) -> None:
        for i in range(len(fleet_things), size):
            thing = f"meter-{i:04d}"
            cloud.enroll(thing, "digits")
            # What the status function writes for a heartbeat: the device has reported.
            report = StatusReport(model="digits", version=None, health=Health.NO_MODEL)
            fleet.record(DeviceRecord(thing, format_time(utc_now()), report))
            fleet_things.append(thing)

    def measure(version: int) -> tuple[list[Counter[str]], list[Counter[str]]]:
        publish_test_version(cloud, version, "digits")
        assert rollouts().start("digits", version)
        rollout = rollouts().get("digits")
        assert rollout is not None
        assert (rollout.stage, rollout.needed) == (1, len(fleet_things))
        take()
        outcomes, heartbeats = [], []
        for thing in fleet_things[-5:]:
            result = report_status(thing, model="digits", version=version, target_version=version)
            assert result["counted"] is True
            outcomes.append(take())
            report_heartbeat(thing, model="digits", version=version)
            heartbeats.append(take())
        return outcomes, heartbeats

    fleet_things: list[str] = []
    grow_to(50)
    small = measure(1)
    grow_to(500)
    large = measure(2)
    # The device's recorded identity, the rollout; the count (the stage's counter is read
    # by the schedule function when the stream delivers the count).
    outcome = Counter({"GetItem": 2, "TransactWriteItems": 1})
    heartbeat = Counter({"GetItem": 2, "UpdateItem": 1})  # identity, rollout; the item
    assert small == large == ([outcome] * 5, [heartbeat] * 5)
