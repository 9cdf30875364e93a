"""The fleet view puts each device's presence beside its last report."""

from __future__ import annotations

import argparse

import pytest

from edgeloop.cli.fleet import _presence_table, device_docs
from edgeloop.contract import Health, StatusReport
from functions.common.fleet import DeviceRecord
from functions.common.presence import Presence


def record(thing: str) -> DeviceRecord:
    return DeviceRecord(thing, "2026-12-01T10:00:00Z", StatusReport("vibration", 1, Health.HEALTHY))


def test_each_device_shows_connected_offline_or_unknown() -> None:
    presence = {
        "pump-1": Presence("pump-1", True, "2026-12-01T09:00:00Z"),
        "pump-2": Presence("pump-2", False, "2026-12-01T11:00:00Z", "MQTT_KEEP_ALIVE_TIMEOUT"),
    }
    docs = {
        d["thing"]: d
        for d in device_docs([record(t) for t in ("pump-1", "pump-2", "pump-3")], presence)
    }
    assert (docs["pump-1"]["presence"], docs["pump-1"]["since"]) == (
        "connected",
        "2026-12-01T09:00:00Z",
    )
    assert (docs["pump-2"]["presence"], docs["pump-2"]["offline_reason"]) == (
        "offline",
        "MQTT_KEEP_ALIVE_TIMEOUT",
    )
    assert docs["pump-3"]["presence"] is None  # no event recorded: shown as "-"
    # The report's own time stays, under both names.
    assert docs["pump-2"]["last_report"] == docs["pump-2"]["last_seen"] == "2026-12-01T10:00:00Z"


def test_without_a_presence_table_the_fleet_shows_without_presence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("EDGELOOP_PRESENCE_TABLE", "EDGELOOP_STACK"):
        monkeypatch.delenv(name, raising=False)
    args = argparse.Namespace(presence_table=None, stack=None, endpoint_url=None)
    assert _presence_table(args) is None
    monkeypatch.setenv("EDGELOOP_PRESENCE_TABLE", "presence")
    assert _presence_table(args) == "presence"
