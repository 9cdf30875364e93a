"""What the requests counted cost: per device-update, per device-day and per model-day,
at the list prices of bench.fleet.prices."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.fleet.capacity import capacity, total
from bench.fleet.prices import LAMBDA_MEMORY_GB, STATUS_OVER_BASIC_INGEST, usd
from bench.fleet.settings import (
    FLAT_TYPES,
    HEARTBEAT,
    IDENTITY_TTL_HOURS,
    READ_OPS,
    REGISTRY_LOOKUP,
    S3_READS,
    TICK_S,
    WRITE_OPS,
)


@dataclass(frozen=True)
class Sizes:
    """What the cost model needs that is not a request count."""

    status_messages: int  # 5 KB IoT messages per status report
    nudge_messages: float  # 5 KB IoT messages per nudge delivered (and per publish)
    cdn_requests: float  # HTTPS requests one device-update makes to the CDN
    download_bytes: int  # bytes one device-update downloads (nudge aside)
    # Of the CDN requests, those CloudFront forwards to S3 each time (no-cache objects);
    # runs kept from before it was measured have none recorded.
    origin_gets: float = 0.0


def per_update(
    reached: int,
    reports: dict[str, int],
    ticks: int,
    deliveries: int,
    units: dict[str, Any],
    sizes: Sizes,
) -> dict[str, Any]:
    """One device-update's share of everything a rollout costs: the outcome reports by
    type, the schedule's runs while the rollout ran (start to complete), the start and
    the nudges delivered, divided by the devices the update reached (that reported an
    outcome). `units` holds the requests measured per report type, per schedule run and
    for the start."""
    each = _requests_per_update(reached, reports, ticks, units)
    outcomes = sum(reports.values())
    cap = capacity(each, units["item_bytes"])
    received = outcomes * sizes.status_messages / reached
    sent = deliveries * sizes.nudge_messages / reached
    by_type = units.get("report_ms_by_type", {})  # absent from runs kept from before
    handler_ms = sum(n * by_type.get(kind, units["report_ms"]) for kind, n in reports.items())
    s3_reads = total(each, "s3 ", S3_READS)
    counts = {
        "received": received,
        "sent": sent,
        "publishes": total(each, "iot-data "),
        "rules": outcomes / reached,
        "lambdas": (outcomes + ticks) / reached,
        "lambda_s": (handler_ms + ticks * units["tick_ms"]) / 1000 / reached,
        "registry_ops": total(each, "iot "),
        "s3_reads": s3_reads,
        "s3_writes": total(each, "s3 ") - s3_reads,
        "kms": total(each, "kms "),
    }
    figures: dict[str, Any] = {
        "iot_messages_received": round(received, 4),
        "iot_messages_sent": round(sent, 4),
        "cloud_messages": round(received + sent, 4),
        "iot_service_publishes": round(counts["publishes"], 6),
        "iot_rules_triggered": round(counts["rules"], 4),
        "lambda_invocations": round(counts["lambdas"], 4),
        "dynamodb_reads": round(total(each, "dynamodb ", READ_OPS), 4),
        "dynamodb_writes": round(total(each, "dynamodb ", WRITE_OPS), 4),
        "dynamodb_rru": round(cap["rru"], 4),
        "dynamodb_wru": round(cap["wru"], 4),
        "s3_requests": round(s3_reads + counts["s3_writes"], 6),
        "kms_requests": round(counts["kms"], 6),
        "iot_registry_operations": round(counts["registry_ops"], 6),
        "cdn_requests": sizes.cdn_requests,
        "cdn_origin_gets": sizes.origin_gets,
        "download_bytes": sizes.download_bytes,
    }
    return {**figures, **_bill(counts, cap, sizes)}


def _requests_per_update(
    reached: int, reports: dict[str, int], ticks: int, units: dict[str, Any]
) -> dict[str, float]:
    per_report = units["per_report"]
    summed: Counter[str] = Counter()
    for kind, count in reports.items():
        for label, v in per_report.get(kind, {}).items():
            summed[label] += count * v
    for label, v in units["per_schedule_run"].items():
        summed[label] += ticks * v
    for label, v in units["start"].items():
        summed[label] += v
    return {k: v / reached for k, v in summed.items()}


def _bill(counts: dict[str, float], cap: dict[str, float], sizes: Sizes) -> dict[str, Any]:
    """The line items of one device-update, per million."""
    p = usd()
    # Status reports reach their rule through Basic Ingest: no messaging charge, only
    # the rules engine's. The nudges (device-bound) are messages.
    metered_in = 0.0 if STATUS_OVER_BASIC_INGEST else counts["received"]
    lines = {
        "IoT messages (status in, nudges out)": (metered_in + counts["sent"]) * p["iot_message"],
        "IoT publishes by the cloud (publish + retained)": 2
        * counts["publishes"]
        * sizes.nudge_messages
        * p["iot_message"],
        "IoT rules (trigger + Lambda action)": counts["rules"]
        * (p["iot_rule_triggered"] + p["iot_rule_action"]),
        "IoT registry operations": counts["registry_ops"] * p["iot_registry_operation"],
        "Lambda requests": counts["lambdas"] * p["lambda_request"],
        "Lambda duration": counts["lambda_s"] * LAMBDA_MEMORY_GB * p["lambda_gb_second"],
        "DynamoDB writes": cap["wru"] * p["dynamodb_wru"],
        "DynamoDB reads": cap["rru"] * p["dynamodb_rru"],
        "S3 requests (signed metadata and targets)": counts["s3_reads"] * p["s3_get"]
        + counts["s3_writes"] * p["s3_put"],
        "KMS signatures": counts["kms"] * p["kms_request"],
        "CloudFront requests": sizes.cdn_requests * p["cloudfront_https_request"],
        "S3 GETs from CloudFront (no-cache timestamp)": sizes.origin_gets * p["s3_get"],
    }
    per_million = {k: round(v * 1e6, 4) for k, v in lines.items()}
    return {
        "usd_per_million_updates": per_million,
        "usd_per_million_updates_total": round(sum(per_million.values()), 3),
        "usd_per_million_per_extra_cdn_request": round(p["cloudfront_https_request"] * 1e6, 3),
        "data_transfer_usd_per_million_updates": round(
            sizes.download_bytes / 1e9 * p["cloudfront_transfer_gb"] * 1e6, 3
        ),
    }


def status_report_usd(units: dict[str, Any], status_messages: int) -> float:
    """One steady status report (a heartbeat, a keep-alive, a health change): its message
    unless it goes by Basic Ingest, the rule and its Lambda action, the invocation and
    its duration, and the DynamoDB units it was measured to take."""
    cap = capacity(units["per_report"][HEARTBEAT], units["item_bytes"])
    p = usd()
    metered = 0 if STATUS_OVER_BASIC_INGEST else status_messages
    heartbeat_ms = units.get("report_ms_by_type", {}).get(HEARTBEAT, units["report_ms"])
    return float(
        metered * p["iot_message"]
        + p["iot_rule_triggered"]
        + p["iot_rule_action"]
        + p["lambda_request"]
        + (heartbeat_ms / 1000) * LAMBDA_MEMORY_GB * p["lambda_gb_second"]
        + cap["wru"] * p["dynamodb_wru"]
        + cap["rru"] * p["dynamodb_rru"]
    )


def registry_operations_per_lookup(units: dict[str, Any]) -> float:
    """Thing-registry operations one identity lookup makes, as the first heartbeats made them."""
    return float(sum(v for k, v in units["per_first_heartbeat"].items() if k in REGISTRY_LOOKUP))


# The design presence replaced: every agent republished its report hourly.
HOURLY_HEARTBEAT_S = 3600.0


def per_device_day(units: dict[str, Any], status_messages: int) -> dict[str, Any]:
    """What a device cost a day in the hourly-heartbeat design, whether or not it
    updated: its heartbeats (the steady ones: the identity kept in its fleet item is
    fresh), and the thing-registry lookup that refreshes that identity once per
    IDENTITY_TTL_HOURS, whichever report pays it. Kept beside the at-rest figure."""
    per = units["per_report"][HEARTBEAT]
    beats = 86_400 / HOURLY_HEARTBEAT_S
    cap = capacity(per, units["item_bytes"])
    p = usd()
    beat_usd = beats * status_report_usd(units, status_messages)
    lookups = 24 / IDENTITY_TTL_HOURS
    ops = registry_operations_per_lookup(units)
    return {
        "heartbeats": {
            "interval_s": HOURLY_HEARTBEAT_S,
            "per_day": beats,
            "messages": beats * status_messages,
            "lambda_invocations": beats,
            "dynamodb_reads": round(beats * total(per, "dynamodb ", READ_OPS), 3),
            "dynamodb_writes": round(beats * total(per, "dynamodb ", WRITE_OPS), 3),
            "dynamodb_rru": round(beats * cap["rru"], 3),
            "dynamodb_wru": round(beats * cap["wru"], 3),
            "usd_per_million_device_days": round(beat_usd * 1e6, 2),
        },
        "identity_lookups": {
            "ttl_hours": IDENTITY_TTL_HOURS,
            "per_day": lookups,
            "registry_operations": round(lookups * ops, 3),
            "usd_per_million_device_days": round(
                lookups * ops * p["iot_registry_operation"] * 1e6, 2
            ),
        },
    }


def per_model_day(units: dict[str, Any]) -> dict[str, Any]:
    """The schedule runs every minute for every model, rolling out or not: a fixed cost."""
    runs = 86_400 / TICK_S
    per = units["per_idle_schedule_run"]
    cap = capacity(per, units["item_bytes"])
    p = usd()
    day_usd = runs * (
        p["lambda_request"]
        + (units["tick_ms"] / 1000) * LAMBDA_MEMORY_GB * p["lambda_gb_second"]
        + cap["rru"] * p["dynamodb_rru"]
        + cap["wru"] * p["dynamodb_wru"]
    )
    return {
        "schedule_runs": runs,
        "dynamodb_reads": round(runs * total(per, "dynamodb ", READ_OPS), 1),
        "dynamodb_rru": round(runs * cap["rru"], 1),
        "usd_per_model_day": round(day_usd, 5),
    }


def reads_by_type(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """DynamoDB reads (requests and read units) per report, by report type, at each size;
    flat when every type measured at two sizes or more has the same figure at each."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for n, r in runs.items():
        for kind, per in r["per_report"].items():
            table.setdefault(kind, {})[n] = {
                "reads": round(total(per, "dynamodb ", READ_OPS), 4),
                "rru": capacity(per, r["item_bytes"])["rru"],
            }
    flat = {}
    for kind in FLAT_TYPES:
        seen = table.get(kind, {})
        values = [v["reads"] for v in seen.values()]
        units = [v["rru"] for v in seen.values()]
        flat[kind] = (
            None
            if len(values) < 2
            else max(values) - min(values) < 1e-9 and max(units) - min(units) < 1e-9
        )
    return {"by_type": table, "flat": flat}
