"""Device status reports into the fleet table, trusting only the topic for who sent them."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from edgeloop.contract import StatusRejected, StatusReport, format_time, utc_now
from edgeloop.contract.topics import check_thing_name
from functions.common.fleet import DeviceRecord, FleetTable
from functions.common.identity import FleetIdentity, UnknownDevice


class StatusIgnored(ValueError):
    """A report that is not recorded, with the reason."""


def record_status(
    fleet: FleetTable,
    thing: str,
    payload: dict[str, Any],
    identity: FleetIdentity,
    now: datetime | None = None,
) -> DeviceRecord:
    """Record one report. `thing` comes from the topic (the IoT rule), never the payload.

    The model and the ring the report counts toward are the registry's: a
    device cannot vote on another model's rollout, nor move itself into the
    canary ring by saying so.
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
        enrolled = identity.of(thing)
    except UnknownDevice as exc:
        raise StatusIgnored(str(exc)) from exc
    if report.model != enrolled.model:
        raise StatusIgnored(
            f"{thing} reports on model {report.model!r} but is enrolled for "
            f"{enrolled.model!r}; a device reports only on its own model"
        )
    report = replace(report, ring=enrolled.ring)
    record = DeviceRecord(
        thing=thing,
        last_seen=format_time(now or utc_now()),
        report=report,
    )
    fleet.record(record)
    return record
