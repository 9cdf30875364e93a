"""Status reports into the fleet table, and rollouts moved on by them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from edgeloop.cli.main import main
from edgeloop.contract import Health, Ring, StatusReport, announcement, format_time, utc_now
from functions.common.fleet import DeviceRecord, FleetTable
from functions.common.wiring import rollouts
from functions.evaluate_rollouts import handler as evaluate_rollouts
from tests.support_aws import (
    FakeLambdaContext,
    LocalCloud,
    report_status,
    start_test_rollout,
)


def test_status_reports_land_in_the_fleet_table(cloud: LocalCloud, capsys: Any) -> None:
    report_status("pump-1", ring="all", version=1)
    report_status("pump-2", ring="all", version=None, health="no_model", queue_depth=4)
    records = FleetTable(cloud.client("dynamodb"), cloud.names["FLEET_TABLE"]).for_model(
        "vibration"
    )
    assert [(r.thing, r.report.version, r.report.health) for r in records] == [
        ("pump-1", 1, "healthy"),
        ("pump-2", None, "no_model"),
    ]
    capsys.readouterr()  # the handlers' metric lines
    code = main(
        [
            "fleet",
            "--model",
            "vibration",
            "--table",
            cloud.names["FLEET_TABLE"],
            "--endpoint-url",
            cloud.endpoint,
            "--json",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)["devices"]
    assert [d["thing"] for d in printed] == ["pump-1", "pump-2"]
    assert printed[1]["queue_depth"] == 4
    main(
        [
            "fleet",
            "--model",
            "vibration",
            "--table",
            cloud.names["FLEET_TABLE"],
            "--endpoint-url",
            cloud.endpoint,
        ]
    )
    table = capsys.readouterr().out
    for cell in ("pump-1", "healthy", "no_model"):
        assert cell in table


def test_a_malformed_report_is_ignored_with_a_reason(cloud: LocalCloud) -> None:
    result = report_status("pump-1", health="superb")
    assert result["recorded"] is False
    assert "status.health 'superb' is not one of" in result["reason"]


def test_canary_promotes_to_all_after_enough_healthy_reports(cloud: LocalCloud) -> None:
    registry = start_test_rollout(cloud)
    [canary] = cloud.announcements(announcement("vibration", Ring.CANARY))
    assert canary["retain"] is True
    assert report_status("pump-1")["rollout"] is None
    assert report_status("pump-10", version=2)["rollout"] is None  # not a canary
    assert report_status("pump-3")["rollout"] == "all"
    rollout = registry.rollout("vibration")
    assert rollout is not None
    assert (rollout["state"], rollout["healthy"]) == ("all", 2)
    [everyone] = cloud.announcements(announcement("vibration", Ring.ALL))
    assert everyone["retain"] is True
    assert everyone["payload"] == b"manifest-v2"


def test_a_first_rollout_aborted_clears_the_canary_announcement(cloud: LocalCloud) -> None:
    start_test_rollout(cloud)
    for thing in ("pump-1", "pump-2", "pump-3"):
        report_status(thing, version=None, health="no_model", step="failed", target_version=2)
    assert cloud.announcements(announcement("vibration", Ring.CANARY))[-1]["payload"] == b""


def test_a_quiet_canary_stalls_when_its_window_closes(cloud: LocalCloud) -> None:
    registry = start_test_rollout(cloud)
    report_status("pump-1")
    assert rollouts().evaluate("vibration", now=datetime.now(UTC) + timedelta(minutes=5)) is None
    assert rollouts().evaluate("vibration", now=datetime.now(UTC) + timedelta(hours=2)) == "stalled"
    rollout = registry.rollout("vibration")
    assert rollout is not None
    assert rollout["state"] == "stalled"
    assert cloud.announcements(announcement("vibration", Ring.ALL)) == []


def test_the_scheduled_handler_evaluates_every_model(cloud: LocalCloud) -> None:
    start_test_rollout(cloud)
    for thing in ("pump-1", "pump-2"):
        FleetTable(cloud.client("dynamodb"), cloud.names["FLEET_TABLE"]).record(
            DeviceRecord(
                thing,
                format_time(utc_now()),
                StatusReport(model="vibration", version=2, health=Health.HEALTHY, ring=Ring.CANARY),
            )
        )
    assert evaluate_rollouts.handler({}, FakeLambdaContext()) == {"decided": {"vibration": "all"}}
