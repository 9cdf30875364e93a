"""The at-rest cost of the presence design, from a heartbeat's measured requests."""

from __future__ import annotations

from typing import Any

import pytest

from bench.fleet.at_rest import (
    AtRest,
    identity_lookups_per_day,
    per_device_day_at_rest,
    presence_item_bytes,
)
from bench.fleet.costs import per_device_day
from bench.fleet.prices import usd

# A heartbeat as the 10,000-device run measured it: two reads, one write, no lookup.
UNITS: dict[str, Any] = {
    "per_report": {
        "heartbeat": {
            "dynamodb GetItem (fleet, eventual)": 1.0,
            "dynamodb GetItem (registry:rollout)": 1.0,
            "dynamodb UpdateItem (fleet)": 1.0,
        }
    },
    "per_first_heartbeat": {
        "iot DescribeThing": 1.0,
        "iot ListThingGroupsForThing": 1.0,
        "dynamodb UpdateItem (fleet)": 1.0,
    },
    "item_bytes": {"fleet": 400, "registry:rollout": 900, "fleet:index": 130},
    "report_ms": 20.0,
    "report_ms_by_type": {"heartbeat": 20.0},
}


def _at_rest(params: AtRest | None = None) -> dict[str, Any]:
    return per_device_day_at_rest(UNITS, 1, 1.0, 0.001, params)


@pytest.mark.parametrize(
    ("keepalive_s", "ttl_hours", "per_day"),
    [
        (86_400.0, 24.0, 1.0),  # once per keep-alive, exactly at expiry
        (3_600.0, 24.0, 1.0),  # hourly reports: once per TTL
        (86_400.0, 168.0, 1 / 7),
        (86_400.0, 36.0, 0.5),  # expired between keep-alives: the next one pays
    ],
)
def test_identity_is_looked_up_by_the_first_report_after_it_expires(
    keepalive_s: float, ttl_hours: float, per_day: float
) -> None:
    assert identity_lookups_per_day(keepalive_s, ttl_hours) == pytest.approx(per_day)


def test_presence_item_is_one_write_unit() -> None:
    assert 0 < presence_item_bytes() <= 1024


def test_lines_at_defaults_are_priced_from_their_counts() -> None:
    """At the agent's defaults: connected all day (no lifecycle event), a keep-alive a
    week (each one pays the identity lookup, whose lifetime is a day), a refresh
    without a nudge every two days (the root probe, the timestamp and its S3 read)."""
    p = usd()
    figures = _at_rest()
    lines = figures["usd_per_million_device_days"]
    assert lines["presence (lifecycle events, rule, DynamoDB write)"] == 0.0
    assert lines["identity lookups (thing registry)"] == pytest.approx(
        2 * p["iot_registry_operation"] / 7 * 1e6, abs=1e-3
    )
    refresh = "refreshes without a nudge (CDN requests, the timestamp's S3 read)"
    assert lines[refresh] == pytest.approx(
        (2 * p["cloudfront_https_request"] + p["s3_get"]) / 2 * 1e6, abs=1e-3
    )
    assert figures["usd_per_million_device_days_total"] == pytest.approx(
        sum(lines.values()), abs=0.01
    )
    assert figures["meets_goal"] is (figures["usd_per_million_device_days_total"] <= 3.0)


def test_a_reconnect_is_priced_from_its_events_messages_and_report() -> None:
    p = usd()
    once = _at_rest(AtRest(reconnects_per_day=1.0))
    events = 2 * (
        p["iot_message"] + p["iot_rule_triggered"] + p["iot_rule_action"] + p["dynamodb_wru"]
    )
    assert once["usd_per_million_device_days"][
        "presence (lifecycle events, rule, DynamoDB write)"
    ] == pytest.approx(events * 1e6, abs=1e-3)
    assert once["beside"]["usd_per_million_reconnects"] > events * 1e6


def test_connectivity_and_the_hourly_design_stay_out_of_the_goal() -> None:
    figures = _at_rest()
    beside = figures["beside"]
    assert beside["connectivity_usd_per_million_device_days"] == pytest.approx(
        1440 * usd()["iot_connectivity_minute"] * 1e6
    )
    old = per_device_day(UNITS, 1)
    hourly = (
        old["heartbeats"]["usd_per_million_device_days"]
        + old["identity_lookups"]["usd_per_million_device_days"]
    )
    assert beside["hourly_heartbeat_design_usd_per_million_device_days"] == pytest.approx(
        hourly, abs=0.01
    )
    assert figures["usd_per_million_device_days_total"] < hourly


def test_each_parameter_moves_its_own_line() -> None:
    base = _at_rest()["usd_per_million_device_days"]
    busier = _at_rest(AtRest(health_changes_per_day=2.0))["usd_per_million_device_days"]
    key = "health and keep-alive reports (rule, Lambda, DynamoDB)"
    # A report a week at rest, then two changes a day on top: 1/7 + 2 reports a day.
    assert busier[key] == pytest.approx(base[key] * (1 / 7 + 2) * 7, rel=1e-2)  # rounded lines
    key = "presence (lifecycle events, rule, DynamoDB write)"
    once = _at_rest(AtRest(reconnects_per_day=1.0))["usd_per_million_device_days"]
    flaky = _at_rest(AtRest(reconnects_per_day=3.0))["usd_per_million_device_days"]
    assert flaky[key] == pytest.approx(3 * once[key], rel=1e-3)
    key = "refreshes without a nudge (CDN requests, the timestamp's S3 read)"
    hourly = _at_rest(AtRest(refresh_s=3_600.0))["usd_per_million_device_days"]
    assert hourly[key] == pytest.approx(48 * base[key], rel=1e-3)
    unbilled = _at_rest(AtRest(reconnects_per_day=1.0, lifecycle_events_billed=False))
    assert unbilled["usd_per_million_device_days_total"] == pytest.approx(
        _at_rest(AtRest(reconnects_per_day=1.0))[
            "usd_per_million_device_days_total_lifecycle_unbilled"
        ]
    )
