"""Status reports into the fleet table, and rollouts moved on by them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from edgeloop.cli import main
from edgeloop.contract import announcement
from edgeloop.contract.status import StatusReport
from functions.announce import handler as announce
from functions.announce.rollout import start_rollout
from functions.common.fleet import DeviceRecord, FleetTable
from functions.common.registry import Registry
from functions.common.rules import TOPIC_THING
from functions.status import handler as status
from tests.integration.cloud.conftest import FakeLambdaContext, LocalCloud


def _report(topic_thing: str, **fields: Any) -> dict[str, Any]:
    report = {"model": "vibration", "version": 2, "health": "healthy", "ring": "canary", **fields}
    result: dict[str, Any] = status.handler(
        {**report, TOPIC_THING: topic_thing}, FakeLambdaContext()
    )
    return result


def _rollout(
    cloud: LocalCloud, version: int = 2, previous_manifest: bytes | None = None
) -> Registry:
    registry = Registry(cloud.client("dynamodb"), cloud.names["REGISTRY_TABLE"])
    s3 = cloud.client("s3")
    bucket = cloud.names["ARTIFACT_BUCKET"]
    from functions.common.publisher import publisher_from_env

    if previous_manifest is not None:
        s3.put_object(
            Bucket=bucket,
            Key=f"models/vibration/{version - 1}/manifest.json",
            Body=previous_manifest,
        )
        registry.put_rollout(
            "vibration",
            {"version": version - 1, "state": "all", "started_at": "2026-01-01T00:00:00Z"},
            expect_state=None,
        )
    s3.put_object(
        Bucket=bucket, Key=f"models/vibration/{version}/manifest.json", Body=b"manifest-v2"
    )
    start_rollout(registry, publisher_from_env(), "vibration", version, b"manifest-v2")
    return registry


def test_status_reports_land_in_the_fleet_table(cloud: LocalCloud, capsys: Any) -> None:
    _report("pump-1", ring="all", version=1)
    _report("pump-2", ring="all", version=None, health="no_model", queue_depth=4)
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
    printed = json.loads(capsys.readouterr().out)
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


def test_a_report_claiming_another_things_name_is_ignored(cloud: LocalCloud) -> None:
    result = _report("pump-1", thing="pump-2")
    assert result["recorded"] is False
    assert "claims to be from 'pump-2'" in result["reason"]
    assert (
        FleetTable(cloud.client("dynamodb"), cloud.names["FLEET_TABLE"]).for_model("vibration")
        == []
    )


def test_a_malformed_report_is_ignored_with_a_reason(cloud: LocalCloud) -> None:
    result = _report("pump-1", health="superb")
    assert result["recorded"] is False
    assert "status.health 'superb' is not one of" in result["reason"]


def test_canary_promotes_to_all_after_enough_healthy_reports(cloud: LocalCloud) -> None:
    registry = _rollout(cloud)
    [canary] = cloud.announcements(announcement("vibration", "canary"))
    assert canary["retain"] is True
    assert _report("pump-1")["rollout"] is None
    assert _report("pump-2", ring="all", version=1)["rollout"] is None  # not a canary
    assert _report("pump-3")["rollout"] == "all"
    rollout = registry.rollout("vibration")
    assert rollout is not None
    assert (rollout["state"], rollout["healthy"]) == ("all", 2)
    [everyone] = cloud.announcements(announcement("vibration", "all"))
    assert everyone["retain"] is True
    assert everyone["payload"] == b"manifest-v2"


def test_canary_aborts_when_too_many_fail_and_the_rest_stay_put(cloud: LocalCloud) -> None:
    registry = _rollout(cloud, previous_manifest=b"manifest-v1")
    _report("pump-1")
    _report("pump-2", version=1, step="failed", target_version=2, health="degraded")
    assert (
        _report("pump-3", version=1, step="rolled_back", target_version=2)["rollout"] == "aborted"
    )
    rollout = registry.rollout("vibration")
    assert rollout is not None
    assert (rollout["state"], rollout["failed"], rollout["healthy"]) == ("aborted", 2, 1)
    assert cloud.announcements(announcement("vibration", "all")) == []
    # Canary devices not yet updated are offered what everyone else runs again.
    assert cloud.announcements(announcement("vibration", "canary"))[-1]["payload"] == b"manifest-v1"
    # An aborted rollout is final: later healthy reports do not revive it.
    _report("pump-4")
    _report("pump-5")
    assert cloud.announcements(announcement("vibration", "all")) == []


def test_a_first_rollout_aborted_clears_the_canary_announcement(cloud: LocalCloud) -> None:
    _rollout(cloud)
    for thing in ("pump-1", "pump-2", "pump-3"):
        _report(thing, version=None, health="no_model", step="failed", target_version=2)
    assert cloud.announcements(announcement("vibration", "canary"))[-1]["payload"] == b""


def test_a_quiet_canary_stalls_when_its_window_closes(cloud: LocalCloud) -> None:
    registry = _rollout(cloud)
    _report("pump-1")
    rollouts = announce.rollouts()
    assert rollouts.evaluate("vibration", now=datetime.now(UTC) + timedelta(minutes=5)) is None
    assert rollouts.evaluate("vibration", now=datetime.now(UTC) + timedelta(hours=2)) == "stalled"
    rollout = registry.rollout("vibration")
    assert rollout is not None
    assert rollout["state"] == "stalled"
    assert cloud.announcements(announcement("vibration", "all")) == []


def test_the_scheduled_handler_evaluates_every_model(cloud: LocalCloud) -> None:
    _rollout(cloud)
    for thing in ("pump-1", "pump-2"):
        FleetTable(cloud.client("dynamodb"), cloud.names["FLEET_TABLE"]).record(
            DeviceRecord(
                thing,
                datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                StatusReport(model="vibration", version=2, health="healthy", ring="canary"),
            )
        )
    assert announce.handler({}, FakeLambdaContext()) == {"decided": {"vibration": "all"}}
