"""The devices of a run: per-device draws (the same for the real run and the model at a
given size) and the status reports they send."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from bench.fleet.prices import STATUS_OVER_BASIC_INGEST
from bench.fleet.settings import DEVICE_MODEL, MODEL, NAMED_CANARIES, SEED, iso
from edgeloop.contract import RuleNames, StatusReport, ThingTopics, ingest_topic
from edgeloop.contract.stages import StagePlan, basis_points
from edgeloop.contract.status import Health, Step


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


def report(thing: str, now: datetime, outcome: str | None) -> dict[str, Any]:
    if outcome is None:
        report = StatusReport(MODEL, 1, Health.HEALTHY, Step.IDLE, None, sent_at=iso(now))
    elif outcome == "installed":
        report = StatusReport(MODEL, 2, Health.HEALTHY, Step.SUCCEEDED, 2, sent_at=iso(now))
    else:
        report = StatusReport(
            MODEL, 1, Health.HEALTHY, Step.ROLLED_BACK, 2, "health check failed", sent_at=iso(now)
        )
    return {**report.to_json(), "thing": thing}


def status_topic(thing: str) -> str:
    topic = ThingTopics(thing).status
    return ingest_topic(RuleNames().status, topic) if STATUS_OVER_BASIC_INGEST else topic
