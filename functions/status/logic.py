"""Device status reports into the fleet table, trusting only the topic for who sent them.

A report is either a terminal outcome of an update (installed, failed) or a
heartbeat. An outcome of the version a rollout offers the device is counted
toward the device's stage, once per device and version; everything else is
recorded for the fleet view and counts toward nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edgeloop.contract import StatusRejected, StatusReport, format_time, utc_now
from edgeloop.contract.topics import check_thing_name
from functions.common.fleet import DeviceRecord, FleetTable
from functions.common.identity import FleetIdentity, UnknownDevice
from functions.common.registry import Registry
from functions.common.rollouts import Rollout


class StatusIgnored(ValueError):
    """A report that is not recorded, with the reason."""


@dataclass(frozen=True)
class Recorded:
    record: DeviceRecord
    rollout: Rollout | None
    counted: bool  # the report added to its stage's counters


def record_status(
    fleet: FleetTable,
    registry: Registry,
    thing: str,
    payload: dict[str, Any],
    identity: FleetIdentity,
    rollout_of: Callable[[str], Rollout | None],
    now: datetime | None = None,
) -> Recorded:
    """Record one report. `thing` comes from the topic (the IoT rule), never the payload.

    The model the report is about and the stage it counts toward are the
    cloud's: the thing registry's model and canary group, and the thing's name.
    A device cannot vote on another model's rollout, nor move itself into an
    earlier stage by saying so, nor count twice by reporting twice.
    """
    try:
        check_thing_name(thing)
    except ValueError as exc:
        raise StatusIgnored(str(exc)) from exc
    claimed = payload.get("thing")
    if claimed is not None and claimed != thing:
        raise StatusIgnored(
            f"report on {thing}'s topic claims to be from {claimed!r}; "
            "a device reports only for itself"
        )
    try:
        report = StatusReport.from_json({k: v for k, v in payload.items() if k != "thing"})
    except StatusRejected as exc:
        raise StatusIgnored(str(exc)) from exc
    try:
        enrolled = identity.of(thing, report.model)
    except UnknownDevice as exc:
        raise StatusIgnored(str(exc)) from exc
    if report.model != enrolled.model:
        raise StatusIgnored(
            f"{thing} reports on model {report.model!r} but is enrolled for "
            f"{enrolled.model!r}; a device reports only on its own model"
        )
    rollout: Rollout | None = rollout_of(report.model)
    stage = None if rollout is None else rollout.plan.stage_of(thing, enrolled.canary)
    at = format_time(now or utc_now())
    record = DeviceRecord(thing, at, report, stage, enrolled.canary, enrolled.checked_at or at)
    outcome = report.outcome
    if (
        rollout is None
        or stage is None
        or outcome is None
        or not rollout.state.counting
        or report.target_version != rollout.version
        # A device the rollout has not reached yet has no say in it, whatever
        # it installed: it would otherwise pre-fill a later stage's counters.
        or stage > rollout.stage
    ):
        fleet.record(record)
        return Recorded(record, rollout, counted=False)
    tally = registry.tally(report.model, rollout.version, stage, outcome)
    counted = fleet.record_outcome(record, rollout.version, tally)
    return Recorded(record, rollout, counted)
