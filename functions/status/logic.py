"""Device status reports into the fleet table, trusting only the topic for who sent them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edgeloop.contract import StatusRejected, StatusReport, format_time, utc_now
from edgeloop.contract.topics import check_thing_name
from functions.common.fleet import DeviceRecord, FleetTable


class StatusIgnored(ValueError):
    """A report that is not recorded, with the reason."""


def record_status(
    fleet: FleetTable, thing: str, payload: dict[str, Any], now: datetime | None = None
) -> DeviceRecord:
    """Record one report. `thing` comes from the topic (the IoT rule), never the payload."""
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
    record = DeviceRecord(
        thing=thing,
        last_seen=format_time(now or utc_now()),
        report=report,
    )
    fleet.record(record)
    return record
