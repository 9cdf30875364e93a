"""The rollout's timeline for a fleet too large to run for real, in SimPy.

By the stage rules of functions.common.rollouts (needed = min(healthy_to_advance,
devices in the stage); abort on the failure share after abort_min_reports, or after
every device of a smaller stage; advance when the stage's installs reach `needed`;
stall when the window closes; evaluated after every counted outcome and every minute)
and the same device draws as the real run. Counts the reports by what they would be.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

from bench.fleet.devices import Devices
from bench.fleet.settings import (
    COUNTED,
    DEVICE_MODEL,
    DUPLICATE,
    MOVED,
    NOT_COUNTED,
    OUTCOME_TYPES,
    SEED,
    START_S,
    TICK_S,
    quantile,
)
from edgeloop.contract.stages import StagePlan
from edgeloop.factory.config import RolloutSection
from functions.common.rollouts import Policy, abort_is_warranted

Process = Generator[simpy.Event, Any, None]


def simulate(n: int, seed: int = SEED) -> dict[str, Any]:
    """The rollout to `n` devices, modelled: its timeline and its reports by type."""
    return Simulation(n, seed).run()


class Simulation:
    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.section = RolloutSection()
        self.plan = StagePlan(self.section.stages)
        self.devices = Devices.draw(n, seed)
        self.env = simpy.Environment(initial_time=START_S)
        self.members: dict[int, np.ndarray] = {
            s: np.flatnonzero(self.devices.stages == s) for s in range(self.plan.last + 1)
        }
        self.stage = -1
        self.needed = 0
        self.enrolled = 0
        self.stage_at = START_S
        self.counts: Counter[tuple[int, str]] = Counter()
        self.counted: set[int] = set()
        self.state = "rolling"
        self.entered: list[dict[str, Any]] = []
        self.types: Counter[str] = Counter()
        self.installs: list[float] = []
        self.installed: set[int] = set()
        self.reported: set[int] = set()
        self.pending = 0
        self.finished_at: float | None = None
        self.offered = np.zeros(n, dtype=bool)
        self.deliveries = 0
        self.ticks = 0
        self.idle_ticks = 0
        self.probed: set[int] = set()

    def run(self) -> dict[str, Any]:
        self.enter(0)
        self.env.process(self.schedule())
        self.env.run()
        installs = sorted(self.installs)
        finished = self.finished_at
        return {
            "devices": self.n,
            "state": self.state,
            "stages_entered": self.entered,
            "reports": {k: self.types[k] for k in OUTCOME_TYPES},
            "reached": len(self.reported),
            "schedule_runs": {"rolling": self.ticks, "idle": self.idle_ticks},
            "deliveries": self.deliveries,
            "complete_s": None if finished is None else round(finished - START_S, 1),
            "installed": len(installs),
            "p50_installed_s": quantile(installs, 0.5),
            "p99_installed_s": quantile(installs, 0.99),
            "all_installed_s": quantile(installs, 1.0),
        }

    def offer(self, indices: np.ndarray) -> None:
        fresh = indices[~self.offered[indices]]
        self.offered[fresh] = True
        self.deliveries += len(indices)
        if len(fresh):
            self.env.process(self.device_reports(fresh, self.env.now))

    def enter(self, stage: int) -> None:
        section = self.section
        first_band = self.plan.bands_covered(max(self.stage, 0)).stop
        starting = self.stage < 0
        while True:
            # The rollout knows a stage's size only up to what it needs to decide.
            known = (
                len(self.members[stage])
                if stage == 0
                else min(
                    max(section.healthy_to_advance, section.abort_min_reports),
                    len(self.members[stage]),
                )
            )
            needed = min(section.healthy_to_advance, known)
            self.stage, self.needed, self.enrolled = stage, needed, known
            self.stage_at = self.env.now
            if needed > 0 or stage == self.plan.last:
                break
            stage += 1
        self.entered.append({"stage": stage, "at_s": round(self.env.now - START_S, 1)})
        if starting:
            self.offer(self.members[0])
        last_band = self.plan.bands_covered(stage).stop
        bands = self.devices.bands
        self.offer(np.flatnonzero((bands >= first_band) & (bands < last_band)))

    def finish(self, to: str) -> None:
        self.state = to
        self.finished_at = self.env.now

    def evaluate(self) -> bool:
        if self.state != "rolling":
            return False
        installed = self.counts[(self.stage, "installed")]
        failed = self.counts[(self.stage, "failed")]
        if abort_is_warranted(Policy.of(self.section), self.enrolled, installed, failed):
            self.finish("aborted")
            return True
        if installed >= min(self.needed, max(self.enrolled - failed, 0)):
            if self.stage >= self.plan.last:
                self.finish("complete")
            else:
                self.enter(self.stage + 1)
            return True
        if self.env.now - self.stage_at > self.section.window_minutes * 60:
            self.state = "stalled"
            return True
        return False

    def device_reports(self, indices: np.ndarray, offered_at: float) -> Process:
        d = self.devices
        heard = np.where(
            d.online[indices],
            offered_at,
            np.maximum(offered_at, START_S + d.reconnect_at[indices]),
        )
        done = heard + d.install_s[indices]
        times = np.concatenate([done, done[d.duplicate[indices]] + 30.0])
        who = np.concatenate([indices, indices[d.duplicate[indices]]])
        order = np.argsort(times, kind="stable")
        self.pending += len(times)
        for t, i in zip(times[order].tolist(), who[order].tolist(), strict=True):
            yield self.env.timeout(t - self.env.now)
            self.pending -= 1
            self.arrive(i)

    def arrive(self, i: int) -> None:
        self.reported.add(i)
        failed = bool(self.devices.fails[i])
        if not failed and i not in self.installed:
            self.installed.add(i)
            self.installs.append(self.env.now)
        stage = int(self.devices.stages[i])
        if self.state not in ("rolling", "paused", "stalled") or stage > self.stage:
            self.types[NOT_COUNTED] += 1
            return
        if i in self.counted:
            self.types[DUPLICATE] += 1
            return
        self.counted.add(i)
        self.counts[(stage, "failed" if failed else "installed")] += 1
        self.types[MOVED if self.evaluate() else COUNTED] += 1
        if stage not in self.probed:
            self.probed.add(stage)
            self.pending += 1
            self.env.process(self.again(i))

    def again(self, i: int) -> Process:
        """The probe of DEVICE_MODEL: the stage's first counted outcome, delivered again."""
        yield self.env.timeout(DEVICE_MODEL["probe_duplicate_after_s"])
        self.pending -= 1
        self.arrive(i)

    def schedule(self) -> Process:
        while True:
            yield self.env.timeout(TICK_S)
            if self.finished_at is None:
                self.ticks += 1
            else:
                self.idle_ticks += 1
            self.evaluate()
            if self.finished_at is not None and self.pending == 0:
                return
