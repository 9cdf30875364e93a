"""Fleet scale: one version rolled out to 1k, 10k and 100k devices by the real cloud code,
and to 1M in a discrete-event model fed with the costs measured at 10k.

The real part runs what the cloud functions run, against moto's server over
HTTP, with the production Registry, FleetTable, RecordedIdentity (the identity
kept in the device's fleet item, in front of ThingRegistryIdentity),
IotDataPublisher and the TUF repository in the run's bucket, signed with the KMS
key (the rollout's pointer, and the files each nudge carries):

- per status message, functions.status.logic.record_status, then
  Rollouts.evaluate when the outcome counted: in the stack the status function
  only counts and the registry's stream invokes the schedule function for that
  evaluation, in batches; here it runs right after the count and is billed with
  the status message (one Lambda invocation where the stack has up to one more
  per stream batch, and one evaluation per counted outcome where a batch has one
  per model);
- every minute, Rollouts.ensure_announced + Rollouts.evaluate (the schedule);
- the release of v1 and v2 into the repository, then Rollouts.start for v2 (what
  the retrain does last).

Devices are plain function calls in simulated time. Every device is enrolled in
the thing registry (IoT CreateThing, 10 of them in the canary thing group) and
sends its first heartbeat (which pays the identity lookup); then v2 is rolled out
through the default stages (named canaries, 1%, 10%, 50%, 100%). A device hears
of v2 when a publish reaches its band (or its own topic), installs after a time
drawn from `DEVICE_MODEL`, and reports its outcome. A device that was offline
sends a heartbeat when it reconnects, as the agent does on every connect.

Every AWS request is counted by a botocore hook, per report and by what the
report turned out to be (counted, moved the rollout, duplicate, not counted,
heartbeat). DynamoDB capacity is computed from the item sizes found at the end
of the run and DynamoDB's rules (moto reports none). One device of the last
stage updates for real (edge.trust's SignedRepository, python-tuf over the
agent's fetcher) through the CDN stand-in in front of the bucket, with what the
nudge that reached it carried: its CDN requests and bytes are one update's. A
function's billed duration is its CPU time plus each request at SERVICE_MS.
`PRICES` is the price table, with its sources.

Once the rollout is complete no report can change it, so the reports left (the
devices that were offline, reconnecting over a day) are handled by several
threads, each device's own reports in order; before that, one at a time in
simulated-time order.

    python -m bench.run fleet                         # 1k, 10k, 100k + the 1M model, README
    python -m bench.fleet --sizes 1000 10000          # some sizes, printed
    python -m bench.fleet --sizes 1000 10000 --reuse earlier.json --save
                                  # run two sizes again, keep the others; results, README
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import heapq
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import simpy
from botocore.config import Config

from bench.soak import train_versions
from edge.config import AgentConfig, BrokerSection
from edge.download import HttpFetcher
from edge.trust import InstalledModel, SignedRepository, TrustLimits
from edgeloop.contract import (
    Nudge,
    RuleNames,
    StatusReport,
    ThingTopics,
    ingest_topic,
    parse_time,
)
from edgeloop.contract.stages import StagePlan, basis_points
from edgeloop.contract.status import Health, Step
from edgeloop.contract.trust_targets import REPOSITORY_PREFIX
from edgeloop.demo.scenarios import ANOMALY_TOML
from edgeloop.factory.config import ModelConfig, RolloutSection, parse_config
from edgeloop.factory.deltas import plan_deltas
from edgeloop.factory.release import build_release
from edgeloop.factory.run import RunResult
from edgeloop.local.aws import CREDENTIALS, REGION, init_trust, provision
from edgeloop.local.broker import dying_with_parent, free_port, wait_listening
from edgeloop.local.cdn import BucketOrigin, LocalCdn
from edgeloop.trust import KmsSigner, S3Store, TrustRepository, VersionRelease
from functions.common.env import IdentityEnv
from functions.common.fleet import FleetTable
from functions.common.identity import (
    RecordedIdentity,
    ThingRegistryIdentity,
    UnknownDevice,
    enroll,
    named_canaries,
)
from functions.common.publisher import IotDataPublisher, Publisher
from functions.common.registry import Registry
from functions.common.rollouts import Policy, Rollouts, abort_is_warranted
from functions.status.logic import StatusIgnored, record_status

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

HEARTBEAT_S: float = next(
    float(f.default)  # type: ignore[arg-type]
    for f in dataclasses.fields(AgentConfig)
    if f.name == "status_interval"
)
# A request's round trip from a function to the service, for the billed duration
# (assumed, not measured: moto on a shared machine answers at its own pace). DynamoDB
# promises single-digit milliseconds; the others are typical figures in one region.
SERVICE_MS: dict[str, float] = {
    "dynamodb": 5.0,
    "iot": 10.0,
    "iot-data": 10.0,
    "s3": 20.0,
    "kms": 15.0,
}
LAMBDA_MEMORY_GB = 0.5  # the status and schedule functions (infra/constructs/iot_wiring.py)

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

# us-east-1 list prices. "source" names the page read; "confirmed" says what a stored
# copy of it showed (searched again for this version of the benchmark).
PRICES: dict[str, dict[str, Any]] = {
    "iot_message": {
        "usd": 1.00 / 1e6,
        "unit": "message (5 KB increments), first 1B/month",
        "source": "https://aws.amazon.com/iot-core/pricing/ (metering rules: "
        "https://aws.amazon.com/iot-core/pricing/additional-details/)",
        "confirmed": "not for us-east-1: the stored copies of the pricing page end before "
        "its price table. The same $1.00 per million messages appears in the page's worked "
        "example (Europe, Ireland) as quoted by "
        "https://gist.github.com/brianfoody/2c62cecc912dbd97bc759eba427e84cf and by a "
        "transcription of the page read 2026-09-20 "
        "(https://raw.githubusercontent.com/api-evangelist/amazon-iot-core/refs/heads/main/"
        "plans/amazon-iot-core-plans-pricing.yml). Metering (5 KB units; a retained "
        "publish metered as publish and retained) confirmed from the additional-details page",
    },
    "iot_rule_triggered": {
        "usd": 0.15 / 1e6,
        "unit": "rule triggered",
        "source": "https://aws.amazon.com/iot-core/pricing/",
        "confirmed": "no: no stored copy or transcription shows the rules engine rate",
    },
    "iot_rule_action": {
        "usd": 0.15 / 1e6,
        "unit": "action executed",
        "source": "https://aws.amazon.com/iot-core/pricing/",
        "confirmed": "no (see iot_rule_triggered)",
    },
    "iot_registry_operation": {
        "usd": 1.25 / 1e6,
        "unit": "registry operation (DescribeThing, ListThingGroupsForThing and "
        "ListThingsInThingGroup are listed as such)",
        "source": "https://www.amazonaws.cn/en/iot-core/pricing/additional-details/ "
        "(which APIs count); rate from https://aws.amazon.com/iot-core/pricing/",
        "confirmed": "not for us-east-1: $1.25 per million registry or Device Shadow "
        "operations is the page's Canada (Central) figure in the 2026-09-20 transcription "
        "named under iot_message; which APIs count is confirmed",
    },
    "lambda_request": {
        "usd": 0.20 / 1e6,
        "unit": "request",
        "source": "https://docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html",
        "confirmed": "yes (undated whitepaper page)",
    },
    "lambda_gb_second": {
        "usd": 0.0000166667,
        "unit": "GB-second (x86)",
        "source": "https://aws.amazon.com/lambda/pricing/",
        "confirmed": "as lambda_request",
    },
    "dynamodb_wru": {
        "usd": 0.625 / 1e6,
        "unit": "on-demand write request unit",
        "source": "https://aws.amazon.com/dynamodb/pricing/on-demand/ (rate as quoted by "
        "https://airbyte.com/data-engineering-resources/dynamodb-pricing)",
        "confirmed": "third-party quote, after the 2024-11-01 on-demand price cut",
    },
    "dynamodb_rru": {
        "usd": 0.125 / 1e6,
        "unit": "on-demand read request unit",
        "source": "as dynamodb_wru",
        "confirmed": "as dynamodb_wru",
    },
    "s3_get": {
        "usd": 0.0004 / 1e3,
        "unit": "S3 Standard GET",
        "source": "https://aws.amazon.com/s3/pricing/ (as quoted by "
        "https://c3x.dev/blog/s3-request-fees-explained)",
        "confirmed": "third-party quote",
    },
    "s3_put": {
        "usd": 0.005 / 1e3,
        "unit": "S3 Standard PUT, COPY, POST or LIST",
        "source": "https://aws.amazon.com/s3/pricing/ (as quoted by "
        "https://c3x.dev/blog/s3-request-fees-explained)",
        "confirmed": "third-party quote",
    },
    "kms_request": {
        "usd": 0.15 / 1e4,
        "unit": "KMS request (Sign) with an asymmetric ECC key",
        "source": "https://aws.amazon.com/kms/pricing/",
        "confirmed": "the stored copy of the pricing page shows no request rates; third-party "
        "pages read 2026-11-22 disagree: $0.03 per 10,000 for every key type "
        "(https://www.wring.co/blog/aws-kms-pricing-guide) or asymmetric operations at 5x "
        "that (https://www.factualminds.com/blog/aws-kms-pricing-keys-requests-multi-region/). "
        "The higher is taken",
    },
    "cloudfront_https_request": {
        "usd": 0.0100 / 1e4,
        "unit": "HTTPS request, United States (per 10,000: $0.0100)",
        "source": "https://aws.amazon.com/cloudfront/pricing/",
        "confirmed": "not from AWS: the stored copy of the pricing page shows the free tier "
        "(10,000,000 requests a month, not counted here) and the transfer table, not the "
        "request rates; $0.0100 per 10,000 HTTPS requests (HTTP $0.0075) is quoted by "
        "https://kindatechnical.com/aws-certification-associate-developer/"
        "lesson-87-cloudfront-pricing.html",
    },
    "cloudfront_transfer_gb": {
        "usd": 0.085,
        "unit": "GB out, United States, Mexico and Canada, first 10 TB/month",
        "source": "http://aws.amazon.com/cloudfront/pricing",
        "confirmed": "yes, from the stored copy of the pricing page (undated)",
    },
}

GOAL_MESSAGES = 3.0
# The agent sends its status reports through Basic Ingest unless told not to: the
# rules engine's charges, no messaging charge.
STATUS_OVER_BASIC_INGEST: bool = BrokerSection.basic_ingest
GOAL_USD_PER_MILLION = 5.0
IOT_MESSAGE_BYTES = 5 * 1024


# --- counting requests ---------------------------------------------------------------


class Meter:
    """Counts every AWS request, by phase and 'service Operation (kind)', per thread.

    Between `begin()` and `end()` a thread's requests are kept for it instead, so
    one report's requests can be told apart while other threads make theirs.
    """

    def __init__(self) -> None:
        self.phase = "setup"
        self.counts: Counter[tuple[str, str]] = Counter()
        self.tables: dict[str, str] = {}  # table name -> "fleet" | "registry"
        self._lock = threading.Lock()
        self._local = threading.local()

    def attach(self, client: Any) -> Any:
        client.meta.events.register("before-parameter-build.*.*", self._count)
        return client

    def begin(self) -> None:
        self._local.calls = []

    def end(self) -> list[str]:
        calls: list[str] = self._local.calls
        self._local.calls = None
        return calls

    def _count(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        service = str(model.service_model.service_name)  # dynamodb, iot, iot-data, s3
        kind = self._kind(service, str(model.name), params)
        label = f"{service} {model.name}" + (f" ({kind})" if kind else "")
        calls = getattr(self._local, "calls", None)
        if calls is not None:
            calls.append(label)
            return
        with self._lock:
            self.counts[(self.phase, label)] += 1

    def add(self, phase: str, calls: Iterable[str]) -> None:
        with self._lock:
            for label in calls:
                self.counts[(phase, label)] += 1

    def _kind(self, service: str, operation: str, params: dict[str, Any]) -> str:
        if service != "dynamodb":
            return ""
        if operation == "TransactWriteItems":
            return "fleet+tally"
        table = self.tables.get(str(params.get("TableName")), "other")
        if "IndexName" in params:
            return f"{table}:index, eventual"  # a global secondary index: never consistent
        key = params.get("Key") or params.get("Item") or {}
        sk = str(key.get("sk", {}).get("S", ""))
        kind = f"{table}:{sk.split('#')[0]}" if sk else table
        if operation in READ_OPS and not params.get("ConsistentRead"):
            kind += ", eventual"
        return kind

    def phase_counts(self, phase: str) -> Counter[str]:
        with self._lock:
            return Counter({label: v for (p, label), v in self.counts.items() if p == phase})

    def by_phase(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for (phase, label), v in sorted(self.counts.items()):
                out.setdefault(phase, {})[label] = v
        return out


def _client_factory(endpoint: str, meter: Meter) -> Callable[[str], Any]:
    config = Config(max_pool_connections=WORKERS * 2, retries={"max_attempts": 3})

    def client(service: str) -> Any:
        return meter.attach(
            boto3.client(
                service,
                endpoint_url=endpoint,
                region_name=REGION,
                aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                config=config,
            )
        )

    return client


class Moto:
    """bench.fleet_moto in its own process (moto, minus two O(N) emulator paths)."""

    def __init__(self) -> None:
        port = free_port()
        self._process = subprocess.Popen(
            dying_with_parent([sys.executable, "-m", "bench.fleet_moto", str(port)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(port, timeout=60.0)
        self.endpoint = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        # Holding a 100k-device fleet, moto's server takes longer than a few seconds to
        # shut down cleanly; its state is not needed any more.
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)


class SimClock:
    """Simulated seconds since EPOCH, kept per thread (threads handle different moments)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def set(self, seconds: float) -> None:
        self._local.now = seconds

    def seconds(self) -> float:
        return float(getattr(self._local, "now", 0.0))

    def utc(self) -> datetime:
        return _at(self.seconds())


# --- the devices ----------------------------------------------------------------------


@dataclass
class Devices:
    """Per-device draws, the same for the real run and the model at a given size."""

    things: list[str]
    bands: np.ndarray
    stages: np.ndarray  # stage by basis point (named canaries: 0)
    online: np.ndarray
    reconnect_at: np.ndarray  # seconds after the start, for the offline ones
    install_s: np.ndarray
    fails: np.ndarray
    duplicate: np.ndarray

    @staticmethod
    def draw(n: int, seed: int = SEED) -> Devices:
        rng = np.random.default_rng(seed)
        things = [f"dev-{i:07d}" for i in range(n)]
        points = np.fromiter((basis_points(t) for t in things), dtype=np.int64, count=n)
        plan = StagePlan()
        limits = np.array([p * 100 for p in plan.percentages])
        stages = np.searchsorted(limits, points, side="right") + 1
        stages[:NAMED_CANARIES] = 0
        m = DEVICE_MODEL
        return Devices(
            things=things,
            bands=points // 100,
            stages=stages,
            online=rng.random(n) < m["online_share"],
            reconnect_at=rng.random(n) * m["offline_reconnect_within_s"],
            install_s=rng.lognormal(math.log(m["install_median_s"]), m["install_sigma"], n),
            fails=rng.random(n) < m["failure_share"],
            duplicate=rng.random(n) < m["duplicate_share"],
        )

    def heard_at(self, i: int, offered_at: float, start: float) -> float:
        if self.online[i]:
            return offered_at
        return max(offered_at, start + float(self.reconnect_at[i]))


def _report(thing: str, now: datetime, outcome: str | None) -> dict[str, Any]:
    if outcome is None:
        report = StatusReport(MODEL, 1, Health.HEALTHY, Step.IDLE, None, sent_at=_iso(now))
    elif outcome == "installed":
        report = StatusReport(MODEL, 2, Health.HEALTHY, Step.SUCCEEDED, 2, sent_at=_iso(now))
    else:
        report = StatusReport(
            MODEL, 1, Health.HEALTHY, Step.ROLLED_BACK, 2, "health check failed", sent_at=_iso(now)
        )
    return {**report.to_json(), "thing": thing}


EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Announcements(Publisher):
    """The real IoT data-plane publisher, and who each publish reaches (the broker's part)."""

    def __init__(self, inner: Publisher, on_publish: Callable[[str, bytes], None]) -> None:
        self._inner = inner
        self._on_publish = on_publish

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self._inner.publish(topic, payload, retain=retain)
        self._on_publish(topic, payload)


# --- what reports cost, by type ---------------------------------------------------------


@dataclass
class ReportBook:
    """Every report handled: how many of each type, their requests, their time."""

    counts: Counter[str] = field(default_factory=Counter)
    requests: dict[str, Counter[str]] = field(default_factory=dict)
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    timed: Counter[str] = field(default_factory=Counter)
    # Thing-registry lookups a report made because the identity kept in its fleet item
    # had expired (IDENTITY_TTL_HOURS): a per-device-day cost, whoever reports first.
    refreshes: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, calls: list[str], seconds: float | None) -> None:
        lookup = [c for c in calls if c in REGISTRY_LOOKUP]
        kept = [c for c in calls if c not in REGISTRY_LOOKUP]
        with self._lock:
            self.counts[kind] += 1
            self.requests.setdefault(kind, Counter()).update(kept)
            if lookup:
                self.refreshes[kind] += 1
            if seconds is not None:
                self.seconds[kind] += seconds
                self.timed[kind] += 1

    def per_report(self) -> dict[str, dict[str, float]]:
        return {
            kind: _per(self.requests.get(kind, Counter()), self.counts[kind])
            for kind in sorted(self.counts)
        }

    def mean_ms(self, kinds: Iterable[str]) -> float:
        kinds = tuple(kinds)
        timed = sum(self.timed[k] for k in kinds)
        return round(1000 * sum(self.seconds[k] for k in kinds) / max(timed, 1), 2)


# --- one real run -----------------------------------------------------------------------


@dataclass
class RunState:
    events: list[tuple[float, int, str, int, str]] = field(default_factory=list)
    seq: int = 0
    offered: set[int] = field(default_factory=set)
    deliveries: int = 0
    delivery_messages: int = 0
    installs: list[float] = field(default_factory=list)
    installed: set[int] = field(default_factory=set)
    reported: set[int] = field(default_factory=set)  # devices that reported an outcome
    pending: int = 0  # reports still to arrive

    def push(self, at: float, kind: str, device: int = -1, outcome: str = "") -> None:
        self.seq += 1
        self.pending += kind != "tick"
        heapq.heappush(self.events, (at, self.seq, kind, device, outcome))


class CountingOrigin:
    """The CDN's origin (the artifact bucket behind an edge cache), counting every
    request a device makes of the CDN, a 404 (the root probe) included."""

    def __init__(self, inner: BucketOrigin) -> None:
        self._inner = inner
        self.requests: list[str] = []

    def get(self, key: str) -> bytes:
        self.requests.append(key)
        return self._inner.get(key)


class ObservedDevice:
    """One device of the fleet updated for real: edge.trust's SignedRepository (python-tuf's
    ngclient over the agent's HTTP fetcher) against the CDN stand-in in front of the
    run's artifact bucket. It holds v1 before the rollout and is nudged for v2 by the
    publish that reaches its band; every CDN request and byte of that update is counted."""

    def __init__(self, workdir: Path, s3: Any, bucket: str, root: bytes, thing: str) -> None:
        self.origin = CountingOrigin(BucketOrigin(s3, bucket))
        self.cdn = LocalCdn(self.origin)
        self.thing = thing
        self.signed = SignedRepository(
            HttpFetcher(self.cdn.base_url + REPOSITORY_PREFIX, 10.0, 3),
            root,
            workdir,
            limits=TrustLimits(min_refresh_seconds=0.0),
        )
        self.installed: InstalledModel | None = None
        self.update: dict[str, Any] | None = None

    def install(self, nudge: bytes | None) -> dict[str, Any]:
        """Refresh (with what the nudge carries, if any) and fetch what the offered
        version takes: spec, golden inputs unless held, patch or compressed model."""
        before, received = len(self.origin.requests), self.signed.bytes_received
        carried = Nudge.from_bytes(nudge).files if nudge is not None else None
        offer = self.signed.refresh(MODEL, self.thing, self.installed, carried)
        assert offer.model is not None, offer
        for target in (offer.spec, offer.golden):
            if target is not None:
                self.signed.download(target, keep=target is offer.golden)
        if offer.patch is not None:
            self.signed.download(offer.patch[0])
        else:
            self.signed.download(offer.compressed["zstd"])
        assert offer.version is not None
        self.installed = InstalledModel(offer.version, offer.model.hashes["sha256"])
        asked = self.origin.requests[before:]
        return {
            "version": offer.version,
            "nudge_bytes": 0 if nudge is None else len(nudge),
            "carried": sorted(carried or {}),
            "cdn_requests": len(asked),
            "bytes": self.signed.bytes_received - received,
            "paths": asked,
        }

    def stop(self) -> None:
        self.cdn.stop()


def release(repository: TrustRepository, config: ModelConfig, runs: list[RunResult]) -> None:
    """What the retrain function publishes for each version: the model, its compressed
    forms, patches from every earlier version, its spec and golden inputs, signed into
    the model's role (the rollout's pointer is the rollouts' business)."""
    published: dict[int, bytes] = {}
    for version, run in enumerate(runs, start=1):
        assert run.tflite is not None
        plan = plan_deltas(run.tflite, published)
        manifest, files = build_release(config, version, run.tflite, plan, run.record)
        repository.publish(VersionRelease.of(manifest, files))
        published[version] = run.tflite


def run_real(n: int, config: ModelConfig, runs: list[RunResult]) -> dict[str, Any]:
    moto = Moto()
    try:
        with contextlib.ExitStack() as cleanup:
            return _run_real(n, moto.endpoint, config, runs, cleanup)
    finally:
        moto.stop()


def _run_real(
    n: int,
    endpoint: str,
    config: ModelConfig,
    runs: list[RunResult],
    cleanup: contextlib.ExitStack,
) -> dict[str, Any]:
    meter = Meter()
    client = _client_factory(endpoint, meter)
    unmetered = _client_factory(endpoint, Meter())
    resources = provision(client, prefix=f"fleet{n}")
    meter.tables = {resources.fleet_table: "fleet", resources.registry_table: "registry"}
    devices = Devices.draw(n)
    state = RunState()
    clock = SimClock()
    by_band: dict[int, list[int]] = {}
    for i, band in enumerate(devices.bands.tolist()):
        by_band.setdefault(int(band), []).append(i)
    index_of = {t: i for i, t in enumerate(devices.things)}
    wall: dict[str, float] = {}

    ddb, iot = client("dynamodb"), client("iot")
    registry = Registry(ddb, resources.registry_table)
    fleet = FleetTable(ddb, resources.fleet_table)
    # As functions.common.wiring.identity() builds it, on the simulated clock.
    things = ThingRegistryIdentity(iot, resources.canary_group, clock=clock.seconds)
    identity = RecordedIdentity(fleet, things, timedelta(hours=IDENTITY_TTL_HOURS), clock=clock.utc)
    workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="edgeloop-fleet-")))
    root = init_trust(unmetered, resources, workdir / "root-keys")
    # As functions.common.wiring.trust_repository() builds it: once per cold start.
    repository = TrustRepository(
        S3Store(client("s3"), resources.artifact_bucket, REPOSITORY_PREFIX),
        KmsSigner.of_key(client("kms"), resources.signing_key_id),
    )
    meter.phase = "release"
    release(repository, config, runs)
    # The observed device: the first of the last stage's devices (never a named canary).
    watched = int(np.flatnonzero(devices.stages == devices.stages.max())[0])
    device = ObservedDevice(
        workdir / "device",
        unmetered("s3"),
        resources.artifact_bucket,
        root,
        devices.things[watched],
    )
    cleanup.callback(device.stop)
    nudges: dict[str, int] = {}  # 5 KB units by payload size, for the cost model

    def on_publish(topic: str, payload: bytes) -> None:
        if not payload or meter.phase in ("setup", "release"):
            return
        if topic.startswith("edgeloop/things/"):
            reached = [index_of[topic.split("/")[2]]]
        else:
            reached = by_band.get(int(topic.rsplit("/", 2)[-2]), [])
        metered = math.ceil((len(payload) + len(topic)) / IOT_MESSAGE_BYTES)
        nudges[str(len(payload) + len(topic))] = metered
        state.deliveries += len(reached)
        state.delivery_messages += len(reached) * metered
        now = clock.seconds()
        for i in reached:
            if i in state.offered:
                continue  # already has it: the agent sees already_installed, reports nothing
            state.offered.add(i)
            if i == watched and device.update is None and device.installed is not None:
                device.update = device.install(payload)
            done = devices.heard_at(i, now, START_S) + float(devices.install_s[i])
            outcome = "failed" if devices.fails[i] else "installed"
            state.push(done, "report", i, outcome)
            if devices.duplicate[i]:
                state.push(done + 30.0, "report", i, outcome)

    def canaries(model: str) -> list[str]:
        # As functions.common.wiring.rollouts() does.
        found = []
        for thing in named_canaries(iot, resources.canary_group):
            try:
                if identity.of(thing).model == model:
                    found.append(thing)
            except UnknownDevice:
                continue
        return found

    rollouts = Rollouts(
        registry=registry,
        fleet=fleet,
        publisher=Announcements(IotDataPublisher(client("iot-data")), on_publish),
        trust=lambda: repository,
        canaries=canaries,
        settings=lambda _model: RolloutSection(),
    )

    # v1's rollout ran before any device reported: every stage empty, complete at once.
    clock.set(0.0)
    meter.phase = "setup"
    registry.set_champion(MODEL, 1, {"version": 1})
    rollouts.start(MODEL, 1, now=_at(0))
    rollouts.evaluate(MODEL, now=_at(0))
    first_install = device.install(None)
    assert first_install["version"] == 1, first_install

    # Enrolment: the platform team's part, not the rollout's.
    started = time.monotonic()
    meter.phase = "enrol"

    def enrol(i: int) -> None:
        group = resources.canary_group if i < NAMED_CANARIES else None
        enroll(iot, devices.things[i], MODEL, group)

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(enrol, range(n)))
    wall["enrol"] = time.monotonic() - started
    _progress(n, "enrol", wall)

    # Every device's first heartbeat: it pays the thing-registry lookup, keeps the answer
    # in the device's fleet item, and puts the device in the fleet table's band index.
    started = time.monotonic()
    meter.phase = "first heartbeat"

    def first_heartbeat(i: int) -> None:
        clock.set(0.0)
        thing = devices.things[i]
        record_status(
            fleet, registry, thing, _report(thing, _at(0), None), identity, rollouts.get, now=_at(0)
        )

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(first_heartbeat, range(n)))
    wall["first heartbeat"] = time.monotonic() - started
    _progress(n, "first heartbeat", wall)

    # The retrain publishes v2 and starts its rollout.
    started = time.monotonic()
    clock.set(START_S)
    meter.phase = "start"
    registry.set_champion(MODEL, 2, {"version": 2})
    rollouts.start(MODEL, 2, now=_at(START_S))
    state.push(START_S + TICK_S, "tick")
    for i in np.flatnonzero(~devices.online).tolist():
        state.push(START_S + float(devices.reconnect_at[i]), "heartbeat", i)

    book = ReportBook()
    ticks = idle_ticks = 0
    tick_s = 0.0  # CPU; the schedule's requests are added at the end (SERVICE_MS)
    wall_s: defaultdict[str, float] = defaultdict(float)
    finished_at: float | None = None  # when the rollout left the counting states
    probed: set[int] = set()  # stages whose first counted outcome was sent again

    def handle(at: float, kind: str, i: int, outcome: str, timed: bool) -> tuple[str, str | None]:
        """One status message, as functions.status.handler does it. Returns what the
        report turned out to be, and what the rollout moved to, if it did."""
        clock.set(at)
        now = _at(at)
        thing = devices.things[i]
        handling, cpu = time.perf_counter(), time.thread_time()
        meter.begin()
        moved = None
        try:
            recorded = record_status(
                fleet,
                registry,
                thing,
                _report(thing, now, outcome or None),
                identity,
                rollouts.get,
                now=now,
            )
            if recorded.counted:
                moved = rollouts.evaluate(MODEL, now=now, rollout=recorded.rollout)
        except StatusIgnored as exc:
            meter.end()
            raise AssertionError(f"{thing}: {exc}") from exc
        calls = meter.end()
        seconds = None
        if timed:
            # Billed duration as a function's would be: this thread's CPU for the handler,
            # plus each request's round trip at AWS's latency (SERVICE_MS), not moto's on
            # a shared machine. The wall time measured here is kept beside it.
            seconds = time.thread_time() - cpu + _service_s(Counter(calls))
            wall_s["reports"] += time.perf_counter() - handling
            wall_s["timed"] += 1
        if not outcome:
            kind = HEARTBEAT
        elif recorded.counted:
            kind = MOVED if moved is not None else COUNTED
        elif any(c.startswith("dynamodb TransactWriteItems") for c in calls):
            kind = DUPLICATE  # counted before: the transaction refused, the report kept
        else:
            kind = NOT_COUNTED
        book.add(kind, calls, seconds)
        meter.add(f"report: {kind}", calls)
        if outcome:
            state.reported.add(i)
            if outcome == "installed" and i not in state.installed:
                state.installed.add(i)
                state.installs.append(at)
        return kind, moved

    # One event at a time, in simulated-time order, while the rollout can still move.
    while state.events and finished_at is None:
        at, _, kind, i, outcome = heapq.heappop(state.events)
        clock.set(at)
        if kind == "tick":
            running = finished_at is None
            meter.phase = "schedule" if running else "schedule, idle"
            cpu = time.thread_time()
            rollouts.ensure_announced(MODEL, now=_at(at))
            rollouts.evaluate(MODEL, now=_at(at))
            ticks += running
            idle_ticks += not running
            tick_s += (time.thread_time() - cpu) * running
            meter.phase = "report"
            current = rollouts.get(MODEL)
            if finished_at is None and current is not None and not current.state.counting:
                finished_at = at
            if state.pending:
                state.push(at + TICK_S, "tick")
            continue
        state.pending -= 1
        kind, moved = handle(at, kind, i, outcome, timed=True)
        if moved in ("complete", "aborted"):
            finished_at = at
        stage = int(devices.stages[i])
        if kind in (COUNTED, MOVED) and stage not in probed:
            probed.add(stage)
            state.push(at + DEVICE_MODEL["probe_duplicate_after_s"], "report", i, outcome)
    wall["rollout, in order"] = time.monotonic() - started
    _progress(n, "rollout, in order", wall)

    # Nothing can move the rollout any more: the remaining reports (devices reconnecting
    # over the day) each change only their device's item. Idle schedule runs first, then
    # every device's reports in order, devices side by side.
    started = time.monotonic()
    remaining = sorted(state.events)
    state.events.clear()
    last = max((e[0] for e in remaining), default=finished_at or START_S)
    at = min((e[0] for e in remaining if e[2] == "tick"), default=last + TICK_S)
    meter.phase = "schedule, idle"
    while at <= last + TICK_S:
        clock.set(at)
        rollouts.ensure_announced(MODEL, now=_at(at))
        rollouts.evaluate(MODEL, now=_at(at))
        idle_ticks += 1
        at += TICK_S
    meter.phase = "report"
    per_device: dict[int, list[tuple[float, str, int, str]]] = {}
    for at, _, kind, i, outcome in remaining:
        if kind != "tick":
            per_device.setdefault(i, []).append((at, kind, i, outcome))

    def device_reports(events: list[tuple[float, str, int, str]]) -> None:
        for at, kind, i, outcome in events:
            handle(at, kind, i, outcome, timed=True)

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(device_reports, per_device.values()))
    wall["rollout, devices side by side"] = time.monotonic() - started
    _progress(n, "rollout, devices side by side", wall)

    rollout = rollouts.get(MODEL)
    assert rollout is not None
    sizes = _item_sizes(
        unmetered("dynamodb"), resources.fleet_table, resources.registry_table, devices.things
    )
    installs = sorted(state.installs)
    per_report = book.per_report()
    first = meter.phase_counts("first heartbeat")
    return {
        "devices": n,
        "named_canaries": NAMED_CANARIES,
        "wall_s": {k: round(v, 1) for k, v in wall.items()},
        "report_ms": book.mean_ms(OUTCOME_TYPES),
        "report_ms_by_type": {kind: book.mean_ms((kind,)) for kind in sorted(book.timed)},
        "report_wall_ms_on_moto": round(1000 * wall_s["reports"] / max(wall_s["timed"], 1), 2),
        "tick_ms": round(
            1000 * (tick_s + _service_s(meter.phase_counts("schedule"))) / max(ticks, 1), 2
        ),
        "requests": meter.by_phase(),
        "reports": dict(book.counts),
        "reached": len(state.reported),
        "identity": {
            "ttl_hours": IDENTITY_TTL_HOURS,
            "first_heartbeat_lookups": first.get("iot DescribeThing", 0),
            "refreshes_by_report_type": dict(book.refreshes),
        },
        "schedule_runs": {"rolling": ticks, "idle": idle_ticks},
        "per_report": per_report,
        "per_schedule_run": _per(meter.phase_counts("schedule"), ticks),
        "per_idle_schedule_run": _per(meter.phase_counts("schedule, idle"), idle_ticks),
        "per_first_heartbeat": _per(first, n),
        "start": _per(meter.phase_counts("start"), 1),
        "deliveries": state.deliveries,
        "delivery_messages": state.delivery_messages,
        "nudge_units_by_bytes": nudges,
        "device_update": device.update,
        "item_bytes": sizes,
        "rollout": {
            "state": rollout.state.value,
            "history": [
                {**h, "at_s": round((_parse(h["at"]) - START_S), 1)}
                for h in rollout.history
                if _parse(h["at"]) >= START_S
            ],
            "complete_s": None if finished_at is None else round(finished_at - START_S, 1),
            "installed": len(installs),
            "p50_installed_s": _quantile(installs, 0.5),
            "p99_installed_s": _quantile(installs, 0.99),
            "all_installed_s": _quantile(installs, 1.0),
        },
    }


def _status_topic(thing: str) -> str:
    topic = ThingTopics(thing).status
    return ingest_topic(RuleNames().status, topic) if STATUS_OVER_BASIC_INGEST else topic


def _service_s(calls: Counter[str]) -> float:
    """Seconds the requests would take at SERVICE_MS each."""
    return (
        sum(SERVICE_MS.get(label.split(" ", 1)[0], 10.0) * n for label, n in calls.items()) / 1000
    )


def _commit() -> str:
    found = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=False,
    )
    return found.stdout.strip() or "unknown"


def _progress(n: int, phase: str, wall: dict[str, float]) -> None:
    print(f"fleet: {n:,} devices: {phase} in {wall[phase]:.1f} s", flush=True)


def _parse(iso: str) -> float:
    return (parse_time(iso) - EPOCH).total_seconds()


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.quantile(np.asarray(values), q)) - START_S, 1)


def _per(counts: Counter[str], per: int) -> dict[str, float]:
    """Requests per unit, by 'service Operation (kind)'."""
    return {k: round(v / max(per, 1), 5) for k, v in sorted(counts.items())}


# --- DynamoDB capacity from item sizes ------------------------------------------------------


def _attr_bytes(value: dict[str, Any]) -> int:
    ((kind, v),) = value.items()
    if kind == "S":
        return len(str(v).encode())
    if kind == "N":
        digits = len(str(v).lstrip("-").replace(".", "").lstrip("0")) or 1
        return math.ceil(digits / 2) + 1
    if kind in ("NULL", "BOOL"):
        return 1
    if kind == "B":
        return len(v)
    return len(json.dumps(v))  # lists and maps: an upper bound, not used here


def item_bytes(item: dict[str, Any]) -> int:
    """An item's size by DynamoDB's rules: attribute names plus values."""
    return sum(len(name.encode()) + _attr_bytes(value) for name, value in item.items())


def _item_sizes(
    ddb: Any, fleet_table: str, registry_table: str, things: list[str]
) -> dict[str, int]:
    sample = things[:: max(1, len(things) // 200)]
    fleet_sizes = []
    for thing in sample:
        item = ddb.get_item(TableName=fleet_table, Key={"thing": {"S": thing}}).get("Item")
        if item:
            fleet_sizes.append(item_bytes(item))
    sizes = {"fleet": max(fleet_sizes)}
    pk = {"S": f"model#{MODEL}"}
    for kind, sk in (("registry:rollout", "rollout"), ("registry:champion", "champion")):
        item = ddb.get_item(TableName=registry_table, Key={"pk": pk, "sk": {"S": sk}})["Item"]
        sizes[kind] = item_bytes(item)
    tallies = ddb.query(
        TableName=registry_table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :t)",
        ExpressionAttributeValues={":pk": pk, ":t": {"S": "tally#"}},
    )["Items"]
    sizes["registry:tally"] = max((item_bytes(i) for i in tallies), default=1)
    # A keys-only index entry: its keys plus DynamoDB's 100 bytes of index overhead.
    sizes["fleet:index"] = len(f"{MODEL}#00") + len("model_band") + len("thing") + 12 + 100
    return sizes


def _label(label: str) -> tuple[str, str, str]:
    service, rest = label.split(" ", 1)
    operation, _, kind = rest.partition(" ")
    return service, operation, kind.strip("()")


def capacity(per_request: dict[str, float], sizes: dict[str, int]) -> dict[str, float]:
    """Request units for requests counted as 'dynamodb Operation (kind)', by DynamoDB's rules:
    reads 4 KB per unit (strongly consistent: 1, eventually consistent: 0.5, a missing
    item the same as a small one; a projection does not make the item smaller), writes
    1 KB per unit, a transaction twice that for every item (a cancelled one is counted as
    if it wrote: an upper bound); an UpdateItem costs the larger of the item before and
    after (the size found at the end is taken: items only grow here). A Query of the band
    index reads at most healthy_to_advance keys-only entries."""

    def w(size: int) -> int:
        return math.ceil(size / 1024)

    def r(size: int) -> int:
        return math.ceil(size / 4096)

    index_entries = RolloutSection().healthy_to_advance
    wru = rru = 0.0
    for label, count in per_request.items():
        service, operation, kind = _label(label)
        if service != "dynamodb":
            continue
        base, _, consistency = kind.partition(", ")
        factor = 0.5 if consistency == "eventual" else 1.0
        size = sizes.get(base, sizes["fleet"])
        if operation == "GetItem":
            rru += count * factor * max(1, r(size))
        elif operation == "Query":
            rru += count * factor * max(1, r(sizes["fleet:index"] * index_entries))
        elif operation == "BatchGetItem":
            rru += count * 100 * factor * r(sizes["fleet"])
        elif operation in ("UpdateItem", "PutItem", "DeleteItem"):
            wru += count * w(size)
        elif operation == "TransactWriteItems":
            wru += count * 2 * (w(sizes["fleet"]) + w(sizes["registry:tally"]))
    return {"wru": round(wru, 5), "rru": round(rru, 5)}


def _sum(per: dict[str, float], prefix: str, operations: Iterable[str] = ()) -> float:
    ops = tuple(operations)
    return sum(
        v for k, v in per.items() if k.startswith(prefix) and (not ops or _label(k)[1] in ops)
    )


# --- the 1M model ---------------------------------------------------------------------------


def simulate(n: int, seed: int = SEED) -> dict[str, Any]:
    """The rollout's timeline for `n` devices in SimPy, by the stage rules of
    functions.common.rollouts (needed = min(healthy_to_advance, devices in the stage);
    abort on the failure share after abort_min_reports, or after every device of a
    smaller stage; advance when the stage's installs reach `needed`; stall when the
    window closes; evaluated after every counted outcome and every minute) and the same
    device draws as the real run. Counts the reports by what they would be."""
    section = RolloutSection()
    plan = StagePlan(section.stages)
    devices = Devices.draw(n, seed)
    env = simpy.Environment(initial_time=START_S)
    members: dict[int, np.ndarray] = {
        s: np.flatnonzero(devices.stages == s) for s in range(plan.last + 1)
    }
    state: dict[str, Any] = {
        "stage": -1,
        "needed": 0,
        "stage_at": START_S,
        "counts": Counter(),
        "counted": set(),
        "state": "rolling",
        "entered": [],
        "types": Counter(),
        "installs": [],
        "installed": set(),
        "reported": set(),
        "pending": 0,
        "finished_at": None,
        "offered": np.zeros(n, dtype=bool),
        "deliveries": 0,
        "ticks": 0,
        "idle_ticks": 0,
        "probed": set(),
    }

    def offer(indices: np.ndarray) -> None:
        fresh = indices[~state["offered"][indices]]
        state["offered"][fresh] = True
        state["deliveries"] += len(indices)
        if len(fresh):
            env.process(device_reports(fresh, env.now))

    def enter(stage: int) -> None:
        first_band = plan.bands_covered(max(state["stage"], 0)).stop
        starting = state["stage"] < 0
        while True:
            known = (
                len(members[stage])
                if stage == 0
                else min(
                    max(section.healthy_to_advance, section.abort_min_reports),
                    len(members[stage]),
                )
            )
            needed = min(section.healthy_to_advance, known)
            state.update(stage=stage, needed=needed, enrolled=known, stage_at=env.now)
            if needed > 0 or stage == plan.last:
                break
            stage += 1
        state["entered"].append({"stage": stage, "at_s": round(env.now - START_S, 1)})
        if starting:
            offer(members[0])
        last_band = plan.bands_covered(stage).stop
        offer(np.flatnonzero((devices.bands >= first_band) & (devices.bands < last_band)))

    def finish(to: str) -> None:
        state["state"] = to
        state["finished_at"] = env.now

    def evaluate() -> bool:
        if state["state"] != "rolling":
            return False
        counts = state["counts"]
        installed = counts[(state["stage"], "installed")]
        failed = counts[(state["stage"], "failed")]
        if abort_is_warranted(Policy.of(section), state["enrolled"], installed, failed):
            finish("aborted")
            return True
        if installed >= min(state["needed"], max(state["enrolled"] - failed, 0)):
            if state["stage"] >= plan.last:
                finish("complete")
            else:
                enter(state["stage"] + 1)
            return True
        if env.now - state["stage_at"] > section.window_minutes * 60:
            state["state"] = "stalled"
            return True
        return False

    def device_reports(indices: np.ndarray, offered_at: float) -> Any:
        heard = np.where(
            devices.online[indices],
            offered_at,
            np.maximum(offered_at, START_S + devices.reconnect_at[indices]),
        )
        done = heard + devices.install_s[indices]
        times = np.concatenate([done, done[devices.duplicate[indices]] + 30.0])
        who = np.concatenate([indices, indices[devices.duplicate[indices]]])
        order = np.argsort(times, kind="stable")
        state["pending"] += len(times)
        for t, i in zip(times[order].tolist(), who[order].tolist(), strict=True):
            yield env.timeout(t - env.now)
            state["pending"] -= 1
            arrive(i)

    def arrive(i: int) -> None:
        state["reported"].add(i)
        if not devices.fails[i] and i not in state["installed"]:
            state["installed"].add(i)
            state["installs"].append(env.now)
        stage = int(devices.stages[i])
        if state["state"] not in ("rolling", "paused", "stalled") or stage > state["stage"]:
            state["types"][NOT_COUNTED] += 1
            return
        if i in state["counted"]:
            state["types"][DUPLICATE] += 1
            return
        state["counted"].add(i)
        outcome = "failed" if devices.fails[i] else "installed"
        state["counts"][(stage, outcome)] += 1
        state["types"][MOVED if evaluate() else COUNTED] += 1
        if stage not in state["probed"]:
            state["probed"].add(stage)
            state["pending"] += 1
            env.process(again(i))

    def again(i: int) -> Any:
        """The probe of DEVICE_MODEL: the stage's first counted outcome, delivered again."""
        yield env.timeout(DEVICE_MODEL["probe_duplicate_after_s"])
        state["pending"] -= 1
        arrive(i)

    def schedule() -> Any:
        while True:
            yield env.timeout(TICK_S)
            if state["finished_at"] is None:
                state["ticks"] += 1
            else:
                state["idle_ticks"] += 1
            evaluate()
            if state["finished_at"] is not None and state["pending"] == 0:
                return

    enter(0)
    env.process(schedule())
    env.run()
    installs = sorted(state["installs"])
    finished = state["finished_at"]
    return {
        "devices": n,
        "state": state["state"],
        "stages_entered": state["entered"],
        "reports": {k: state["types"][k] for k in OUTCOME_TYPES},
        "reached": len(state["reported"]),
        "schedule_runs": {"rolling": state["ticks"], "idle": state["idle_ticks"]},
        "deliveries": state["deliveries"],
        "complete_s": None if finished is None else round(finished - START_S, 1),
        "installed": len(installs),
        "p50_installed_s": _quantile(installs, 0.5),
        "p99_installed_s": _quantile(installs, 0.99),
        "all_installed_s": _quantile(installs, 1.0),
    }


# --- per device per update, and the bill ---------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """What the cost model needs that is not a request count."""

    status_messages: int  # 5 KB IoT messages per status report
    nudge_messages: float  # 5 KB IoT messages per nudge delivered (and per publish)
    cdn_requests: float  # HTTPS requests one device-update makes to the CDN
    download_bytes: int  # bytes one device-update downloads (nudge aside)


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
    per_report = units["per_report"]
    total: Counter[str] = Counter()
    for kind, count in reports.items():
        for label, v in per_report.get(kind, {}).items():
            total[label] += count * v
    for label, v in units["per_schedule_run"].items():
        total[label] += ticks * v
    for label, v in units["start"].items():
        total[label] += v
    each = {k: v / reached for k, v in total.items()}
    outcomes = sum(reports.values())
    cap = capacity(each, units["item_bytes"])
    received = outcomes * sizes.status_messages / reached
    sent = deliveries * sizes.nudge_messages / reached
    publishes = _sum(each, "iot-data ")
    lambdas = (outcomes + ticks) / reached
    by_type = units.get("report_ms_by_type", {})  # absent from runs kept from before
    handler_ms = sum(n * by_type.get(kind, units["report_ms"]) for kind, n in reports.items())
    lambda_s = (handler_ms + ticks * units["tick_ms"]) / 1000 / reached
    registry_ops = _sum(each, "iot ")
    s3_reads = _sum(each, "s3 ", S3_READS)
    s3_writes = _sum(each, "s3 ") - s3_reads
    kms = _sum(each, "kms ")
    figures: dict[str, Any] = {
        "iot_messages_received": round(received, 4),
        "iot_messages_sent": round(sent, 4),
        "cloud_messages": round(received + sent, 4),
        "iot_service_publishes": round(publishes, 6),
        "iot_rules_triggered": round(outcomes / reached, 4),
        "lambda_invocations": round(lambdas, 4),
        "dynamodb_reads": round(_sum(each, "dynamodb ", READ_OPS), 4),
        "dynamodb_writes": round(_sum(each, "dynamodb ", WRITE_OPS), 4),
        "dynamodb_rru": round(cap["rru"], 4),
        "dynamodb_wru": round(cap["wru"], 4),
        "s3_requests": round(s3_reads + s3_writes, 6),
        "kms_requests": round(kms, 6),
        "iot_registry_operations": round(registry_ops, 6),
        "cdn_requests": sizes.cdn_requests,
        "download_bytes": sizes.download_bytes,
    }
    p = {k: v["usd"] for k, v in PRICES.items()}
    # Status reports reach their rule through Basic Ingest: no messaging charge, only
    # the rules engine's. The nudges (device-bound) are messages.
    metered_in = 0.0 if STATUS_OVER_BASIC_INGEST else received
    lines = {
        "IoT messages (status in, nudges out)": (metered_in + sent) * p["iot_message"],
        "IoT publishes by the cloud (publish + retained)": 2
        * publishes
        * sizes.nudge_messages
        * p["iot_message"],
        "IoT rules (trigger + Lambda action)": outcomes
        / reached
        * (p["iot_rule_triggered"] + p["iot_rule_action"]),
        "IoT registry operations": registry_ops * p["iot_registry_operation"],
        "Lambda requests": lambdas * p["lambda_request"],
        "Lambda duration": lambda_s * LAMBDA_MEMORY_GB * p["lambda_gb_second"],
        "DynamoDB writes": cap["wru"] * p["dynamodb_wru"],
        "DynamoDB reads": cap["rru"] * p["dynamodb_rru"],
        "S3 requests (signed metadata and targets)": s3_reads * p["s3_get"]
        + s3_writes * p["s3_put"],
        "KMS signatures": kms * p["kms_request"],
        "CloudFront requests": sizes.cdn_requests * p["cloudfront_https_request"],
    }
    per_million = {k: round(v * 1e6, 4) for k, v in lines.items()}
    figures["usd_per_million_updates"] = per_million
    figures["usd_per_million_updates_total"] = round(sum(per_million.values()), 3)
    figures["usd_per_million_per_extra_cdn_request"] = round(p["cloudfront_https_request"] * 1e6, 3)
    figures["data_transfer_usd_per_million_updates"] = round(
        sizes.download_bytes / 1e9 * p["cloudfront_transfer_gb"] * 1e6, 3
    )
    return figures


def per_device_day(units: dict[str, Any], status_messages: int) -> dict[str, Any]:
    """What a device costs a day whether or not it updates: its heartbeats (the steady
    ones: the identity kept in its fleet item is fresh), and the thing-registry lookup
    that refreshes that identity once per IDENTITY_TTL_HOURS, whichever report pays it."""
    per = units["per_report"][HEARTBEAT]
    beats = 86_400 / HEARTBEAT_S
    cap = capacity(per, units["item_bytes"])
    p = {k: v["usd"] for k, v in PRICES.items()}
    metered = 0 if STATUS_OVER_BASIC_INGEST else status_messages
    heartbeat_ms = units.get("report_ms_by_type", {}).get(HEARTBEAT, units["report_ms"])
    beat_usd = beats * (
        metered * p["iot_message"]
        + p["iot_rule_triggered"]
        + p["iot_rule_action"]
        + p["lambda_request"]
        + (heartbeat_ms / 1000) * LAMBDA_MEMORY_GB * p["lambda_gb_second"]
        + cap["wru"] * p["dynamodb_wru"]
        + cap["rru"] * p["dynamodb_rru"]
    )
    lookups = 24 / IDENTITY_TTL_HOURS
    ops = sum(v for k, v in units["per_first_heartbeat"].items() if k in REGISTRY_LOOKUP)
    return {
        "heartbeats": {
            "interval_s": HEARTBEAT_S,
            "per_day": beats,
            "messages": beats * status_messages,
            "lambda_invocations": beats,
            "dynamodb_reads": round(beats * _sum(per, "dynamodb ", READ_OPS), 3),
            "dynamodb_writes": round(beats * _sum(per, "dynamodb ", WRITE_OPS), 3),
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
    p = {k: v["usd"] for k, v in PRICES.items()}
    usd = runs * (
        p["lambda_request"]
        + (units["tick_ms"] / 1000) * LAMBDA_MEMORY_GB * p["lambda_gb_second"]
        + cap["rru"] * p["dynamodb_rru"]
        + cap["wru"] * p["dynamodb_wru"]
    )
    return {
        "schedule_runs": runs,
        "dynamodb_reads": round(runs * _sum(per, "dynamodb ", READ_OPS), 1),
        "dynamodb_rru": round(runs * cap["rru"], 1),
        "usd_per_model_day": round(usd, 5),
    }


def reads_by_type(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """DynamoDB reads (requests and read units) per report, by report type, at each size;
    flat when every type measured at two sizes or more has the same figure at each."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for n, r in runs.items():
        for kind, per in r["per_report"].items():
            table.setdefault(kind, {})[n] = {
                "reads": round(_sum(per, "dynamodb ", READ_OPS), 4),
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


def measure(
    sizes: Iterable[int] = SIZES, reuse: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Run the real rollout at each size, model 1M, and cost it all. `reuse` holds real
    runs of an earlier result to keep as measured (sizes not run again here): their
    request counts stand, and their cost inputs (what one device's update asks of the
    CDN, the nudge's and the status report's size) are this run's."""
    sizes = tuple(sizes)
    commit = _commit()  # now: the code that runs, whatever is committed meanwhile
    config = parse_config(tomllib.loads(ANOMALY_TOML))
    runs = train_versions(2)
    sample = _report("dev-0000000", _at(0), "installed")
    status_bytes = len(
        json.dumps({k: v for k, v in sample.items() if k != "thing"}).encode()
    ) + len(_status_topic("dev-0000000"))
    real: dict[str, dict[str, Any]] = {}
    for n in sizes:
        print(f"fleet: {n:,} devices against moto", flush=True)
        started = time.monotonic()
        r = run_real(n, config, runs)
        r["wall_s"]["total"] = round(time.monotonic() - started, 1)
        r["commit"] = commit
        real[str(n)] = r
        print(
            json.dumps(
                {
                    "devices": n,
                    "wall_s": r["wall_s"],
                    "reports": r["reports"],
                    "rollout": {k: v for k, v in r["rollout"].items() if k != "history"},
                }
            ),
            flush=True,
        )
    fresh = set(real)
    for size, kept in (reuse or {}).items():
        if size not in real:
            real[size] = kept
    for size in fresh:
        r = real[size]
        update = r["device_update"]
        r["cost_inputs"] = dataclasses.asdict(
            Sizes(
                status_messages=math.ceil(status_bytes / IOT_MESSAGE_BYTES),
                nudge_messages=r["delivery_messages"] / max(r["deliveries"], 1),
                cdn_requests=float(update["cdn_requests"]),
                download_bytes=int(update["bytes"]),
            )
        )
    latest = real[max(fresh, key=int)]
    for size in set(real) - fresh:
        real[size]["cost_inputs"] = latest["cost_inputs"]
        real[size]["cost_inputs_from"] = latest["devices"]
    real = dict(sorted(real.items(), key=lambda kv: int(kv[0])))
    for r in real.values():
        r["per_update"] = per_update(
            r["reached"],
            {k: r["reports"].get(k, 0) for k in OUTCOME_TYPES},
            r["schedule_runs"]["rolling"],
            r["deliveries"],
            r,
            Sizes(**r["cost_inputs"]),
        )
        r["per_device_day"] = per_device_day(r, r["cost_inputs"]["status_messages"])
        r["per_model_day"] = per_model_day(r)
        r["model"] = simulate(r["devices"])
    basis = dict(real.get(str(COSTS_FROM)) or real[str(max(int(k) for k in real))])
    # A report type the basis run happened not to see (a duplicate arriving while its
    # stage still counts is rare) is costed as the nearest size that saw it measured it.
    borrowed: dict[str, int] = {}
    per_report = dict(basis["per_report"])
    for kind in OUTCOME_TYPES:
        if kind not in per_report:
            nearest = sorted(
                (r for r in real.values() if kind in r["per_report"]),
                key=lambda r: abs(math.log(r["devices"] / basis["devices"])),
            )
            if nearest:
                per_report[kind] = nearest[0]["per_report"][kind]
                borrowed[kind] = nearest[0]["devices"]
    basis["per_report"] = per_report
    print(f"fleet: modelling {MODELLED:,} devices", flush=True)
    started = time.monotonic()
    modelled = simulate(MODELLED)
    modelled["seconds"] = round(time.monotonic() - started, 1)
    # Every delivery of the model is a nudge, as in the real runs.
    modelled["per_update"] = per_update(
        modelled["reached"],
        modelled["reports"],
        modelled["schedule_runs"]["rolling"],
        modelled["deliveries"],
        basis,
        Sizes(**basis["cost_inputs"]),
    )
    modelled["costs_from"] = basis["devices"]
    modelled["costs_borrowed_from"] = borrowed
    modelled["per_device_day"] = per_device_day(basis, basis["cost_inputs"]["status_messages"])
    reads = reads_by_type(real)
    flat = all(v is not False for v in reads["flat"].values()) and any(
        v is True for v in reads["flat"].values()
    )
    messages_ok = all(
        r["per_update"]["cloud_messages"] <= GOAL_MESSAGES for r in real.values()
    ) and (modelled["per_update"]["cloud_messages"] <= GOAL_MESSAGES)
    cost_ok = modelled["per_update"]["usd_per_million_updates_total"] <= GOAL_USD_PER_MILLION
    return {
        "sizes": [int(n) for n in real],
        "device_model": DEVICE_MODEL,
        "prices": PRICES,
        "status_message_bytes": status_bytes,
        "status_over_basic_ingest": STATUS_OVER_BASIC_INGEST,
        "runs": real,
        "modelled": modelled,
        "reads_per_report": reads,
        "goals": {
            "dynamodb_reads_per_report_flat": flat,
            "cloud_messages_le_3": messages_ok,
            "usd_per_million_le_5": cost_ok,
        },
        "goal_messages": GOAL_MESSAGES,
        "goal_usd_per_million": GOAL_USD_PER_MILLION,
        "meets_goal": flat and messages_ok and cost_ok,
        "reproduce": "python -m bench.run fleet",
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--out", type=Path, help="write the figures here (default: print)")
    parser.add_argument(
        "--save",
        action="store_true",
        help="write them to bench/results/fleet.json and the README's table, as bench.run does",
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        help="an earlier result whose real runs of other sizes are kept as measured",
    )
    args = parser.parse_args()
    start = time.monotonic()
    reuse = None
    if args.reuse:
        try:
            reuse = json.loads(args.reuse.read_text())["runs"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            parser.error(f"--reuse {args.reuse}: not a fleet result to keep runs from ({exc})")
    figures = measure(args.sizes, reuse)
    figures["seconds"] = round(time.monotonic() - start, 1)
    text = json.dumps(figures, indent=2, default=float)
    if args.save:
        from bench.common import write_result
        from bench.run import rewrite_readme

        print(f"fleet: {write_result('fleet', figures)}")
        rewrite_readme()
    elif args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
