"""Counting AWS requests: a botocore hook per client, per phase and per report, and
what a report's requests would take as a function's billed duration."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config

from bench.fleet.prices import SERVICE_MS
from bench.fleet.settings import READ_OPS, REGISTRY_LOOKUP, WORKERS, at, per
from edgeloop.local.aws import CREDENTIALS, REGION


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


def client_factory(endpoint: str, meter: Meter) -> Callable[[str], Any]:
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


class SimClock:
    """Simulated seconds since EPOCH, kept per thread (threads handle different moments)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def set(self, seconds: float) -> None:
        self._local.now = seconds

    def seconds(self) -> float:
        return float(getattr(self._local, "now", 0.0))

    def utc(self) -> datetime:
        return at(self.seconds())


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
            kind: per(self.requests.get(kind, Counter()), self.counts[kind])
            for kind in sorted(self.counts)
        }

    def mean_ms(self, kinds: Iterable[str]) -> float:
        kinds = tuple(kinds)
        timed = sum(self.timed[k] for k in kinds)
        return round(1000 * sum(self.seconds[k] for k in kinds) / max(timed, 1), 2)


def service_s(calls: Counter[str]) -> float:
    """Seconds the requests would take at SERVICE_MS each."""
    return (
        sum(SERVICE_MS.get(label.split(" ", 1)[0], 10.0) * n for label, n in calls.items()) / 1000
    )
