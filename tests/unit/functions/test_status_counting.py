"""Which reports count toward a rollout stage: the status function's rules, without AWS."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from edgeloop.contract import StagePlan
from edgeloop.factory.config import RolloutSection
from functions.common.fleet import DeviceRecord, FleetTable, Tally
from functions.common.identity import DeviceIdentity, UnknownDevice
from functions.common.registry import Registry
from functions.common.rollouts import Policy, Rollout, State
from functions.status.logic import StatusIgnored, record_status

PLAN = StagePlan()  # by their names: pump-20 is in stage 2, pump-10 in 3, pump-11 in 4


class Fleet(FleetTable):
    def __init__(self) -> None:
        super().__init__(None, "fleet")
        self.recorded: list[DeviceRecord] = []
        self.counted: list[tuple[str, int, Tally]] = []

    def record(self, record: DeviceRecord) -> None:
        self.recorded.append(record)

    def record_outcome(self, record: DeviceRecord, version: int, tally: Tally) -> bool:
        self.recorded.append(record)
        self.counted.append((record.thing, version, tally))
        return True


class Identities:
    def __init__(self, canaries: set[str]) -> None:
        self.canaries = canaries

    def of(self, thing: str, claimed_model: str | None = None) -> DeviceIdentity:
        if thing == "ghost":
            raise UnknownDevice("thing 'ghost' is not enrolled")
        return DeviceIdentity(thing, "vibration", thing in self.canaries)


def rollout(stage: int, state: State = State.ROLLING, version: int = 2) -> Rollout:
    return Rollout(
        model="vibration",
        version=version,
        previous=1,
        state=state,
        stage=stage,
        plan=PLAN,
        policy=Policy.of(RolloutSection()),
        started_at="2026-06-01T12:00:00Z",
        stage_started_at="2026-06-01T12:00:00Z",
        needed=5,
    )


INSTALLED = {
    "model": "vibration",
    "version": 2,
    "health": "healthy",
    "step": "succeeded",
    "target_version": 2,
}


def record(
    thing: str,
    report: dict[str, Any],
    current: Rollout | None,
    canaries: frozenset[str] = frozenset({"pump-5"}),
) -> tuple[bool, Fleet]:
    fleet = Fleet()
    recorded = record_status(
        fleet,
        Registry(None, "registry"),
        thing,
        report,
        Identities(set(canaries)),
        lambda model: current,
    )
    assert fleet.recorded == [recorded.record]  # every accepted report is recorded once
    assert recorded.counted == bool(fleet.counted)
    return recorded.counted, fleet


def test_an_outcome_counts_toward_the_devices_own_stage() -> None:
    """pump-20 (stage 2) counts in stage 2's counter while the rollout is at stage 3."""
    counted, fleet = record("pump-20", INSTALLED, rollout(3))
    assert counted
    [(thing, version, tally)] = fleet.counted
    assert (thing, version, tally.counter) == ("pump-20", 2, "installed")
    assert tally.key["sk"] == {"S": "tally#version#0000000002#stage#02"}
    assert fleet.recorded[0].stage == 2


@pytest.mark.parametrize(
    ("step", "counter"),
    [("failed", "failed"), ("rolled_back", "failed"), ("succeeded", "installed")],
)
def test_each_terminal_step_counts_as_its_outcome(step: str, counter: str) -> None:
    _, fleet = record("pump-20", {**INSTALLED, "step": step}, rollout(2))
    assert [t.counter for _, _, t in fleet.counted] == [counter]


def test_a_named_canary_counts_in_stage_0_whatever_its_name() -> None:
    _, fleet = record("pump-11", INSTALLED, rollout(0), canaries=frozenset({"pump-11"}))
    assert [t.key["sk"]["S"][-8:] for _, _, t in fleet.counted] == ["stage#00"]
    assert fleet.recorded[0].canary


@pytest.mark.parametrize(
    ("why", "thing", "report", "current"),
    [
        ("a stage the rollout has not reached", "pump-10", INSTALLED, rollout(2)),
        ("not a named canary at stage 0", "pump-20", INSTALLED, rollout(0)),
        ("a heartbeat", "pump-20", {**INSTALLED, "step": "idle"}, rollout(4)),
        ("an intermediate step", "pump-20", {**INSTALLED, "step": "downloading"}, rollout(4)),
        ("no target version", "pump-20", {**INSTALLED, "target_version": None}, rollout(4)),
        ("another version", "pump-20", {**INSTALLED, "target_version": 1}, rollout(4)),
        ("no rollout", "pump-20", INSTALLED, None),
        ("complete", "pump-20", INSTALLED, rollout(4, State.COMPLETE)),
        ("aborted", "pump-20", INSTALLED, rollout(4, State.ABORTED)),
    ],
)
def test_what_does_not_count_is_still_recorded(
    why: str, thing: str, report: dict[str, Any], current: Rollout | None
) -> None:
    counted, fleet = record(thing, report, current)
    assert not counted, why
    assert fleet.recorded[0].report.model == "vibration"


@pytest.mark.parametrize("state", [State.PAUSED, State.STALLED])
def test_a_held_rollout_still_counts_what_arrives(state: State) -> None:
    """Paused or stalled, the outcomes are kept for when the operator resumes."""
    counted, _ = record("pump-20", INSTALLED, rollout(2, state))
    assert counted


@pytest.mark.parametrize(
    ("thing", "report", "reason"),
    [
        ("pump-10", {**INSTALLED, "stage": 0}, "status.stage: unknown key"),
        ("pump-10", {**INSTALLED, "ring": "canary"}, "status.ring: unknown key"),
        ("pump-10", {**INSTALLED, "thing": "pump-5"}, "claims to be from 'pump-5'"),
        ("pump-10", {**INSTALLED, "model": "digits"}, "enrolled for 'vibration'"),
        ("ghost", INSTALLED, "not enrolled"),
        ("a/b", INSTALLED, "thing name"),
    ],
)
def test_a_report_that_speaks_for_what_is_the_clouds_is_ignored(
    thing: str, report: dict[str, Any], reason: str
) -> None:
    fleet = Fleet()
    with pytest.raises(StatusIgnored, match=reason):
        record_status(
            fleet, Registry(None, "r"), thing, report, Identities(set()), lambda m: rollout(0)
        )
    assert fleet.recorded == []


def test_the_stage_recorded_is_the_plans_of_the_rollout_at_hand() -> None:
    narrow = replace(rollout(1), plan=StagePlan((50, 100)))
    _, fleet = record("pump-10", INSTALLED, narrow)  # basis point 1018: under 50%
    assert fleet.recorded[0].stage == 1
    assert fleet.counted
