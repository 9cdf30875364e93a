"""What every part of the fleet benchmark shares: the sizes, the simulated clock's
origin, the assumptions about devices, and what a report can turn out to be."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np

from functions.common.env import IdentityEnv

SIZES = (1_000, 10_000, 100_000)
MODELLED = 1_000_000
COSTS_FROM = 10_000  # the 1M model uses the per-report costs measured at this size
MODEL = "vibration"
NAMED_CANARIES = 10
TICK_S = 60.0  # the schedule (EventBridge, every minute)
START_S = 3600.0  # v2 is published an hour into the run, after every device's heartbeat
WORKERS = 8  # concurrent clients where order does not matter
SEED = 17
IDENTITY_TTL_HOURS = float(IdentityEnv.model_fields["identity_ttl_hours"].default)

# Assumptions about devices (not measured: stated, and the same at every size).
DEVICE_MODEL: dict[str, float] = {
    # Share of devices connected when their band is published; they install at once.
    "online_share": 0.9,
    # The others reconnect at a uniformly random time within this many seconds of the
    # start, send a heartbeat (the agent reports on every connect) and get the retained
    # announcement then.
    "offline_reconnect_within_s": 86_400.0,
    # Install time after hearing of the version (download, patch, check, swap): lognormal.
    "install_median_s": 45.0,
    "install_sigma": 0.6,
    # Share of devices whose install fails (reported as failed).
    "failure_share": 0.01,
    # Share of devices whose outcome message arrives twice (QoS 1 redelivery), 30 s apart.
    "duplicate_share": 0.01,
    # Besides: the first outcome counted in each stage arrives again this many seconds
    # later, so that a duplicate reaching a stage that still counts (rare with the draws
    # above: stages pass within seconds) is measured at every size.
    "probe_duplicate_after_s": 5.0,
}


# What a report turned out to be. "moved" is a counted outcome whose evaluation moved
# the rollout on (a stage passed, complete, aborted): a handful per rollout.
COUNTED, MOVED, DUPLICATE, NOT_COUNTED, HEARTBEAT = (
    "counted",
    "moved",
    "duplicate",
    "not counted",
    "heartbeat",
)
OUTCOME_TYPES = (COUNTED, MOVED, DUPLICATE, NOT_COUNTED)
# The report types whose reads must not grow with the fleet (a transition's reads are
# bounded by the stage's needed installs instead, and shown beside them).
FLAT_TYPES = (COUNTED, DUPLICATE, NOT_COUNTED, HEARTBEAT)
REGISTRY_LOOKUP = ("iot DescribeThing", "iot ListThingGroupsForThing")
READ_OPS = ("GetItem", "Query", "BatchGetItem")
S3_READS = ("GetObject", "HeadObject", "ListObjectsV2", "ListObjects")
WRITE_OPS = ("UpdateItem", "PutItem", "TransactWriteItems", "DeleteItem")

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def quantile(values: list[float], q: float) -> float | None:
    """Seconds after v2's start by which a share `q` of `values` had happened."""
    if not values:
        return None
    return round(float(np.quantile(np.asarray(values), q)) - START_S, 1)


def per(counts: Counter[str], units: int) -> dict[str, float]:
    """Requests per unit, by 'service Operation (kind)'."""
    return {k: round(v / max(units, 1), 5) for k, v in sorted(counts.items())}
