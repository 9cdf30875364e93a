"""What a device costs a day at rest, from the costs measured for a status report, the
agent's own defaults (edge.config) and stated parameters.

Presence comes from AWS IoT Core's lifecycle events ($aws/events/presence/connected|
disconnected/<clientId>) through one IoT rule whose DynamoDBv2 action writes a presence
item: no Lambda, and nothing while the device stays connected. The agent reports status
when its health, step or version changes, and once per keep-alive besides, by Basic
Ingest to the status rule and its Lambda. The identity kept in the device's fleet item
is refreshed from the thing registry by the first report after it expires. The agent
refreshes the signed metadata without a nudge every `refresh_interval`: the root probe
and the timestamp from the CDN, and the timestamp's read from S3. MQTT keep-alive pings
are not metered. Connectivity (minutes connected) is paid for being connected at all,
so it is reported beside the goal, not in it; so is what one reconnect costs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from bench.fleet.capacity import item_bytes
from bench.fleet.costs import per_device_day, registry_operations_per_lookup, status_report_usd
from bench.fleet.prices import GOAL_AT_REST_USD_PER_MILLION, IOT_MESSAGE_BYTES, usd
from bench.fleet.settings import IDENTITY_TTL_HOURS
from edge.config import AgentConfig, TrustSection

DAY_S = 86_400.0


# The agent's own defaults (edge.config), so the figure follows what ships.
def _default(cls: type, name: str) -> float:
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if not isinstance(field.default, float):
        raise TypeError(f"{cls.__name__}.{name} has no float default")
    return field.default


# A refresh that finds nothing new asks the CDN for the next root (a 404) and the
# timestamp, and CloudFront passes the no-cache timestamp to S3
# (tests/security/test_nudge_attacks.py pins the two requests).
TIMER_REFRESH_CDN_REQUESTS = 2
TIMER_REFRESH_S3_GETS = 1


@dataclass(frozen=True)
class AtRest:
    """The design's parameters, with their defaults."""

    keepalive_s: float = _default(AgentConfig, "status_interval")  # the keep-alive report
    refresh_s: float = _default(TrustSection, "refresh_interval")  # refresh without a nudge
    health_changes_per_day: float = 0.0  # a device at rest stays healthy
    # A device at rest stays connected; what each reconnect costs is reported beside
    # the goal, per reconnect.
    reconnects_per_day: float = 0.0  # each: one connected and one disconnected event
    identity_ttl_hours: float = IDENTITY_TTL_HOURS  # functions.common.env.IdentityEnv
    # Not confirmed either way (no stored AWS page says whether the broker's own
    # lifecycle publishes are metered): counted as a message each, the upper bound.
    lifecycle_events_billed: bool = True
    models_per_million_devices: float = 1.0  # the schedule's minute runs, shared
    connected_share: float = 1.0  # of the day, for connectivity


def lifecycle_event(thing: str = "dev-0000000") -> tuple[str, dict[str, Any]]:
    """A disconnected event (the larger of the two) as AWS IoT Core documents it."""
    topic = f"$aws/events/presence/disconnected/{thing}"
    return topic, {
        "clientId": thing,
        "timestamp": 1_733_500_000_000,
        "eventType": "disconnected",
        "clientInitiatedDisconnect": False,
        "sessionIdentifier": "a4666d2a7d844ae4ac5d7b38c9cb7967",
        "principalIdentifier": "0" * 64,  # the certificate's id
        "disconnectReason": "MQTT_KEEP_ALIVE_TIMEOUT",
        "versionNumber": 0,
    }


def presence_item_bytes() -> int:
    """The item the DynamoDBv2 action writes: each top-level field of the event an
    attribute (PutItem, so it replaces the device's last presence item)."""
    _, event = lifecycle_event()
    item: dict[str, dict[str, Any]] = {}
    for name, value in event.items():
        if isinstance(value, bool):
            item[name] = {"BOOL": value}
        elif isinstance(value, int):
            item[name] = {"N": str(value)}
        else:
            item[name] = {"S": str(value)}
    return item_bytes(item)


def identity_lookups_per_day(keepalive_s: float, ttl_hours: float) -> float:
    """The identity is refreshed by the first report at or after its expiry: with one
    report per keep-alive, every ceil(ttl / keep-alive) keep-alives."""
    ttl_s = ttl_hours * 3600
    return DAY_S / (math.ceil(ttl_s / keepalive_s - 1e-9) * keepalive_s)


def per_device_day_at_rest(
    units: dict[str, Any],
    status_messages: int,
    nudge_messages: float,
    usd_per_model_day: float,
    params: AtRest | None = None,
) -> dict[str, Any]:
    """Per million device-days: each line of the design at rest, the goal's total
    (presence, health, identity, schedule), and beside it connectivity, reconnecting,
    and the hourly-heartbeat design this replaces."""
    a = params or AtRest()
    p = usd()
    topic, event = lifecycle_event()
    event_units = math.ceil((len(json.dumps(event)) + len(topic)) / IOT_MESSAGE_BYTES)
    presence_wru = math.ceil(presence_item_bytes() / 1024)
    events = 2 * a.reconnects_per_day
    per_event = (
        (event_units * p["iot_message"] if a.lifecycle_events_billed else 0.0)
        + p["iot_rule_triggered"]
        + p["iot_rule_action"]
        + presence_wru * p["dynamodb_wru"]
    )
    presence = events * per_event
    reports = DAY_S / a.keepalive_s + a.health_changes_per_day
    status = reports * status_report_usd(units, status_messages)
    lookups = identity_lookups_per_day(a.keepalive_s, a.identity_ttl_hours)
    registry_ops = lookups * registry_operations_per_lookup(units)
    identity = registry_ops * p["iot_registry_operation"]
    schedule = usd_per_model_day * a.models_per_million_devices / 1e6
    refreshes = DAY_S / a.refresh_s
    per_refresh = (
        TIMER_REFRESH_CDN_REQUESTS * p["cloudfront_https_request"]
        + TIMER_REFRESH_S3_GETS * p["s3_get"]
    )
    refresh = refreshes * per_refresh
    lines = {
        "presence (lifecycle events, rule, DynamoDB write)": presence,
        "health and keep-alive reports (rule, Lambda, DynamoDB)": status,
        "identity lookups (thing registry)": identity,
        "refreshes without a nudge (CDN requests, the timestamp's S3 read)": refresh,
        "schedule (per model-day, shared)": schedule,
    }
    per_million = {k: round(v * 1e6, 3) for k, v in lines.items()}
    goal_total = round(sum(per_million.values()), 2)
    # Each reconnect: CONNECT and one SUBSCRIBE (both under 5 KB) and the band's
    # retained announcement, which the broker sends again on subscribe.
    reconnect = (2 + nudge_messages) * p["iot_message"]
    # What one reconnect adds: its two lifecycle events through the rule, CONNECT,
    # SUBSCRIBE, the retained announcement, and the report the agent sends on connect.
    per_reconnect = 2 * per_event + reconnect + status_report_usd(units, status_messages)
    connectivity = a.connected_share * 24 * 60 * p["iot_connectivity_minute"]
    old = per_device_day(units, status_messages)
    hourly = (
        old["heartbeats"]["usd_per_million_device_days"]
        + old["identity_lookups"]["usd_per_million_device_days"]
    )
    return {
        "parameters": dataclasses.asdict(a),
        "lifecycle_event_messages": event_units,
        "presence_item_bytes": presence_item_bytes(),
        "presence_wru": presence_wru,
        "status_reports_per_day": reports,
        "refreshes_per_day": round(refreshes, 4),
        "identity_lookups_per_day": round(lookups, 4),
        "registry_operations_per_day": round(registry_ops, 4),
        "usd_per_million_device_days": per_million,
        "usd_per_million_device_days_total": goal_total,
        "usd_per_million_device_days_total_lifecycle_unbilled": round(
            goal_total - events * event_units * p["iot_message"] * 1e6
            if a.lifecycle_events_billed
            else goal_total,
            2,
        ),
        "goal_usd_per_million": GOAL_AT_REST_USD_PER_MILLION,
        "meets_goal": goal_total <= GOAL_AT_REST_USD_PER_MILLION,
        "beside": {
            "connectivity_usd_per_million_device_days": round(connectivity * 1e6, 2),
            "usd_per_million_reconnects": round(per_reconnect * 1e6, 2),
            "hourly_heartbeat_design_usd_per_million_device_days": round(
                hourly + schedule * 1e6, 2
            ),
            # The same, with the hourly refresh it had and did not count.
            "hourly_heartbeat_design_with_its_refreshes_usd_per_million_device_days": round(
                hourly + schedule * 1e6 + 24 * per_refresh * 1e6, 2
            ),
        },
    }
