"""One real rollout against moto's server: the production cloud code, devices as plain
function calls in simulated time, every AWS request counted (see bench.fleet)."""

from __future__ import annotations

import contextlib
import heapq
import math
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.fleet.capacity import item_sizes
from bench.fleet.devices import Devices, report
from bench.fleet.metering import Meter, ReportBook, SimClock, client_factory, service_s
from bench.fleet.observed import ObservedDevice
from bench.fleet.prices import IOT_MESSAGE_BYTES
from bench.fleet.settings import (
    COUNTED,
    DEVICE_MODEL,
    DUPLICATE,
    EPOCH,
    HEARTBEAT,
    IDENTITY_TTL_HOURS,
    MODEL,
    MOVED,
    NAMED_CANARIES,
    NOT_COUNTED,
    OUTCOME_TYPES,
    START_S,
    TICK_S,
    WORKERS,
    at,
    per,
    quantile,
)
from edgeloop.contract import parse_time
from edgeloop.contract.trust_targets import REPOSITORY_PREFIX
from edgeloop.factory.config import ModelConfig, RolloutSection
from edgeloop.factory.deltas import plan_deltas
from edgeloop.factory.release import build_release
from edgeloop.factory.run import RunResult
from edgeloop.local.aws import init_trust, provision
from edgeloop.local.broker import dying_with_parent, free_port, wait_listening
from edgeloop.trust import KmsSigner, S3Store, TrustRepository, VersionRelease
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
from functions.common.rollouts import Rollouts
from functions.status.logic import StatusIgnored, record_status


class Moto:
    """bench.fleet.moto_server in its own process (moto, minus two O(N) emulator paths)."""

    def __init__(self) -> None:
        port = free_port()
        self._process = subprocess.Popen(
            dying_with_parent([sys.executable, "-m", "bench.fleet.moto_server", str(port)]),
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


class Announcements(Publisher):
    """The real IoT data-plane publisher, and who each publish reaches (the broker's part)."""

    def __init__(self, inner: Publisher, on_publish: Callable[[str, bytes], None]) -> None:
        self._inner = inner
        self._on_publish = on_publish

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self._inner.publish(topic, payload, retain=retain)
        self._on_publish(topic, payload)


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
            return RealRun(n, moto.endpoint, cleanup).run(config, runs)
    finally:
        moto.stop()


class RealRun:
    """The cloud as the stack runs it, over moto, for `n` devices in simulated time."""

    def __init__(self, n: int, endpoint: str, cleanup: contextlib.ExitStack) -> None:
        self.n = n
        self.cleanup = cleanup
        self.meter = Meter()
        self.client = client_factory(endpoint, self.meter)
        self.unmetered = client_factory(endpoint, Meter())
        self.resources = provision(self.client, prefix=f"fleet{n}")
        self.meter.tables = {
            self.resources.fleet_table: "fleet",
            self.resources.registry_table: "registry",
        }
        self.devices = Devices.draw(n)
        self.state = RunState()
        self.clock = SimClock()
        self.by_band: dict[int, list[int]] = {}
        for i, band in enumerate(self.devices.bands.tolist()):
            self.by_band.setdefault(int(band), []).append(i)
        self.index_of = {t: i for i, t in enumerate(self.devices.things)}
        self.wall: dict[str, float] = {}
        self.ddb, self.iot = self.client("dynamodb"), self.client("iot")
        self.registry = Registry(self.ddb, self.resources.registry_table)
        self.fleet = FleetTable(self.ddb, self.resources.fleet_table)
        # As functions.common.wiring.identity() builds it, on the simulated clock.
        things = ThingRegistryIdentity(
            self.iot, self.resources.canary_group, clock=self.clock.seconds
        )
        self.identity = RecordedIdentity(
            self.fleet, things, timedelta(hours=IDENTITY_TTL_HOURS), clock=self.clock.utc
        )
        self.workdir = Path(
            cleanup.enter_context(tempfile.TemporaryDirectory(prefix="edgeloop-fleet-"))
        )
        self.root = init_trust(self.unmetered, self.resources, self.workdir / "root-keys")
        # As functions.common.wiring.trust_repository() builds it: once per cold start.
        self.repository = TrustRepository(
            S3Store(self.client("s3"), self.resources.artifact_bucket, REPOSITORY_PREFIX),
            KmsSigner.of_key(self.client("kms"), self.resources.signing_key_id),
        )
        self.nudges: dict[str, int] = {}  # 5 KB units by payload size, for the cost model
        self.book = ReportBook()
        self.ticks = self.idle_ticks = 0
        self.tick_s = 0.0  # CPU; the schedule's requests are added at the end (SERVICE_MS)
        self.wall_s: defaultdict[str, float] = defaultdict(float)
        self.finished_at: float | None = None  # when the rollout left the counting states
        self.probed: set[int] = set()  # stages whose first counted outcome was sent again

    def run(self, config: ModelConfig, runs: list[RunResult]) -> dict[str, Any]:
        self.meter.phase = "release"
        release(self.repository, config, runs)
        # The observed device: the first of the last stage's devices (never a named canary).
        stages = self.devices.stages
        self.watched = int(np.flatnonzero(stages == stages.max())[0])
        self.device = ObservedDevice(
            self.workdir / "device",
            self.unmetered("s3"),
            self.resources.artifact_bucket,
            self.root,
            self.devices.things[self.watched],
        )
        self.cleanup.callback(self.device.stop)
        self.rollouts = Rollouts(
            registry=self.registry,
            fleet=self.fleet,
            publisher=Announcements(IotDataPublisher(self.client("iot-data")), self.on_publish),
            trust=lambda: self.repository,
            canaries=self.canaries,
            settings=lambda _model: RolloutSection(),
        )
        self.first_version()
        self.timed("enrol", self.enrol)
        self.timed("first heartbeat", self.first_heartbeats)
        started = time.monotonic()
        self.start()
        self.in_order()
        self.wall["rollout, in order"] = time.monotonic() - started
        _progress(self.n, "rollout, in order", self.wall)
        self.timed("rollout, devices side by side", self.side_by_side)
        return self.result()

    def timed(self, phase: str, step: Callable[[], None]) -> None:
        started = time.monotonic()
        step()
        self.wall[phase] = time.monotonic() - started
        _progress(self.n, phase, self.wall)

    def on_publish(self, topic: str, payload: bytes) -> None:
        if not payload or self.meter.phase in ("setup", "release"):
            return
        state, devices = self.state, self.devices
        if topic.startswith("edgeloop/things/"):
            reached = [self.index_of[topic.split("/")[2]]]
        else:
            reached = self.by_band.get(int(topic.rsplit("/", 2)[-2]), [])
        metered = math.ceil((len(payload) + len(topic)) / IOT_MESSAGE_BYTES)
        self.nudges[str(len(payload) + len(topic))] = metered
        state.deliveries += len(reached)
        state.delivery_messages += len(reached) * metered
        now = self.clock.seconds()
        for i in reached:
            if i in state.offered:
                continue  # already has it: the agent sees already_installed, reports nothing
            state.offered.add(i)
            device = self.device
            if i == self.watched and device.update is None and device.installed is not None:
                device.update = device.install(payload)
            done = devices.heard_at(i, now, START_S) + float(devices.install_s[i])
            outcome = "failed" if devices.fails[i] else "installed"
            state.push(done, "report", i, outcome)
            if devices.duplicate[i]:
                state.push(done + 30.0, "report", i, outcome)

    def canaries(self, model: str) -> list[str]:
        # As functions.common.wiring.rollouts() does.
        found = []
        for thing in named_canaries(self.iot, self.resources.canary_group):
            try:
                if self.identity.of(thing).model == model:
                    found.append(thing)
            except UnknownDevice:
                continue
        return found

    def first_version(self) -> None:
        """v1's rollout ran before any device reported: every stage empty, complete at once."""
        self.clock.set(0.0)
        self.meter.phase = "setup"
        self.registry.set_champion(MODEL, 1, {"version": 1})
        self.rollouts.start(MODEL, 1, now=at(0))
        self.rollouts.evaluate(MODEL, now=at(0))
        first_install = self.device.install(None)
        assert first_install["version"] == 1, first_install

    def enrol(self) -> None:
        """The platform team's part, not the rollout's."""
        self.meter.phase = "enrol"
        group = self.resources.canary_group

        def one(i: int) -> None:
            enroll(self.iot, self.devices.things[i], MODEL, group if i < NAMED_CANARIES else None)

        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(one, range(self.n)))

    def first_heartbeats(self) -> None:
        """Each pays the thing-registry lookup, keeps the answer in the device's fleet item,
        and puts the device in the fleet table's band index."""
        self.meter.phase = "first heartbeat"

        def one(i: int) -> None:
            self.clock.set(0.0)
            thing = self.devices.things[i]
            record_status(
                self.fleet,
                self.registry,
                thing,
                report(thing, at(0), None),
                self.identity,
                self.rollouts.get,
                now=at(0),
            )

        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(one, range(self.n)))

    def start(self) -> None:
        """The retrain publishes v2 and starts its rollout."""
        self.clock.set(START_S)
        self.meter.phase = "start"
        self.registry.set_champion(MODEL, 2, {"version": 2})
        self.rollouts.start(MODEL, 2, now=at(START_S))
        self.state.push(START_S + TICK_S, "tick")
        devices = self.devices
        for i in np.flatnonzero(~devices.online).tolist():
            self.state.push(START_S + float(devices.reconnect_at[i]), "heartbeat", i)

    def handle(self, when: float, i: int, outcome: str) -> tuple[str, str | None]:
        """One status message, as functions.status.handler does it. Returns what the
        report turned out to be, and what the rollout moved to, if it did."""
        self.clock.set(when)
        now = at(when)
        thing = self.devices.things[i]
        handling, cpu = time.perf_counter(), time.thread_time()
        self.meter.begin()
        moved = None
        try:
            recorded = record_status(
                self.fleet,
                self.registry,
                thing,
                report(thing, now, outcome or None),
                self.identity,
                self.rollouts.get,
                now=now,
            )
            if recorded.counted:
                moved = self.rollouts.evaluate(MODEL, now=now, rollout=recorded.rollout)
        except StatusIgnored as exc:
            self.meter.end()
            raise AssertionError(f"{thing}: {exc}") from exc
        calls = self.meter.end()
        # Billed duration as a function's would be: this thread's CPU for the handler,
        # plus each request's round trip at AWS's latency (SERVICE_MS), not moto's on
        # a shared machine. The wall time measured here is kept beside it.
        seconds = time.thread_time() - cpu + service_s(Counter(calls))
        self.wall_s["reports"] += time.perf_counter() - handling
        self.wall_s["timed"] += 1
        if not outcome:
            kind = HEARTBEAT
        elif recorded.counted:
            kind = MOVED if moved is not None else COUNTED
        elif any(c.startswith("dynamodb TransactWriteItems") for c in calls):
            kind = DUPLICATE  # counted before: the transaction refused, the report kept
        else:
            kind = NOT_COUNTED
        self.book.add(kind, calls, seconds)
        self.meter.add(f"report: {kind}", calls)
        if outcome:
            self.state.reported.add(i)
            if outcome == "installed" and i not in self.state.installed:
                self.state.installed.add(i)
                self.state.installs.append(when)
        return kind, moved

    def in_order(self) -> None:
        """One event at a time, in simulated-time order, while the rollout can still move."""
        state = self.state
        while state.events and self.finished_at is None:
            when, _, kind, i, outcome = heapq.heappop(state.events)
            self.clock.set(when)
            if kind == "tick":
                self.tick(when)
                continue
            state.pending -= 1
            kind, moved = self.handle(when, i, outcome)
            if moved in ("complete", "aborted"):
                self.finished_at = when
            stage = int(self.devices.stages[i])
            if kind in (COUNTED, MOVED) and stage not in self.probed:
                self.probed.add(stage)
                after = DEVICE_MODEL["probe_duplicate_after_s"]
                state.push(when + after, "report", i, outcome)

    def tick(self, when: float) -> None:
        """The schedule's run while the rollout counts (in_order's loop)."""
        running = self.finished_at is None
        self.meter.phase = "schedule" if running else "schedule, idle"
        cpu = time.thread_time()
        self.rollouts.ensure_announced(MODEL, now=at(when))
        self.rollouts.evaluate(MODEL, now=at(when))
        self.ticks += running
        self.idle_ticks += not running
        self.tick_s += (time.thread_time() - cpu) * running
        self.meter.phase = "report"
        current = self.rollouts.get(MODEL)
        if self.finished_at is None and current is not None and not current.state.counting:
            self.finished_at = when
        if self.state.pending:
            self.state.push(when + TICK_S, "tick")

    def side_by_side(self) -> None:
        """Nothing can move the rollout any more: the remaining reports (devices
        reconnecting over the day) each change only their device's item. Idle schedule
        runs first, then every device's reports in order, devices side by side."""
        remaining = sorted(self.state.events)
        self.state.events.clear()
        last = max((e[0] for e in remaining), default=self.finished_at or START_S)
        when = min((e[0] for e in remaining if e[2] == "tick"), default=last + TICK_S)
        self.meter.phase = "schedule, idle"
        while when <= last + TICK_S:
            self.clock.set(when)
            self.rollouts.ensure_announced(MODEL, now=at(when))
            self.rollouts.evaluate(MODEL, now=at(when))
            self.idle_ticks += 1
            when += TICK_S
        self.meter.phase = "report"
        per_device: dict[int, list[tuple[float, int, str]]] = {}
        for when, _, kind, i, outcome in remaining:
            if kind != "tick":
                per_device.setdefault(i, []).append((when, i, outcome))

        def device_reports(events: list[tuple[float, int, str]]) -> None:
            for when, i, outcome in events:
                self.handle(when, i, outcome)

        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(device_reports, per_device.values()))

    def result(self) -> dict[str, Any]:
        rollout = self.rollouts.get(MODEL)
        assert rollout is not None
        meter, book, state = self.meter, self.book, self.state
        sizes = item_sizes(
            self.unmetered("dynamodb"),
            self.resources.fleet_table,
            self.resources.registry_table,
            self.devices.things,
        )
        installs = sorted(state.installs)
        first = meter.phase_counts("first heartbeat")
        schedule_ms = 1000 * (self.tick_s + service_s(meter.phase_counts("schedule")))
        return {
            "devices": self.n,
            "named_canaries": NAMED_CANARIES,
            "wall_s": {k: round(v, 1) for k, v in self.wall.items()},
            "report_ms": book.mean_ms(OUTCOME_TYPES),
            "report_ms_by_type": {kind: book.mean_ms((kind,)) for kind in sorted(book.timed)},
            "report_wall_ms_on_moto": round(
                1000 * self.wall_s["reports"] / max(self.wall_s["timed"], 1), 2
            ),
            "tick_ms": round(schedule_ms / max(self.ticks, 1), 2),
            "requests": meter.by_phase(),
            "reports": dict(book.counts),
            "reached": len(state.reported),
            "identity": {
                "ttl_hours": IDENTITY_TTL_HOURS,
                "first_heartbeat_lookups": first.get("iot DescribeThing", 0),
                "refreshes_by_report_type": dict(book.refreshes),
            },
            "schedule_runs": {"rolling": self.ticks, "idle": self.idle_ticks},
            "per_report": book.per_report(),
            "per_schedule_run": per(meter.phase_counts("schedule"), self.ticks),
            "per_idle_schedule_run": per(meter.phase_counts("schedule, idle"), self.idle_ticks),
            "per_first_heartbeat": per(first, self.n),
            "start": per(meter.phase_counts("start"), 1),
            "deliveries": state.deliveries,
            "delivery_messages": state.delivery_messages,
            "nudge_units_by_bytes": self.nudges,
            "device_update": self.device.update,
            "item_bytes": sizes,
            "rollout": {
                "state": rollout.state.value,
                "history": [
                    {**h, "at_s": round((_parse(h["at"]) - START_S), 1)}
                    for h in rollout.history
                    if _parse(h["at"]) >= START_S
                ],
                "complete_s": None
                if self.finished_at is None
                else round(self.finished_at - START_S, 1),
                "installed": len(installs),
                "p50_installed_s": quantile(installs, 0.5),
                "p99_installed_s": quantile(installs, 0.99),
                "all_installed_s": quantile(installs, 1.0),
            },
        }


def _progress(n: int, phase: str, wall: dict[str, float]) -> None:
    print(f"fleet: {n:,} devices: {phase} in {wall[phase]:.1f} s", flush=True)


def _parse(iso: str) -> float:
    return (parse_time(iso) - EPOCH).total_seconds()
