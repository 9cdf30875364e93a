"""Rollouts: canary ring first, then everyone; abort when too many canaries fail.

A rollout is a small state machine kept in the registry:
    canary → all       enough canary devices report healthy on the version in time
    canary → aborted   the failure share passes its threshold after enough reports
    canary → stalled   the window closed without enough healthy reports
Every transition is a conditional write, so two evaluators never both act.
One announcement is one retained publish, whatever the fleet's size.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from edgeloop.contract import Ring, announcement, format_time, parse_time, utc_now
from edgeloop.factory.release import manifest_key
from functions.common.fleet import FleetTable
from functions.common.publisher import Publisher
from functions.common.registry import Registry, StaleWrite
from functions.common.storage import ObjectStore


@dataclass(frozen=True)
class RolloutPolicy:
    healthy_needed: int
    window: timedelta
    abort_share: float
    abort_min_reports: int


@dataclass(frozen=True)
class CanaryTally:
    healthy: int
    failed: int

    @property
    def reports(self) -> int:
        return self.healthy + self.failed


def start_rollout(
    registry: Registry,
    publisher: Publisher,
    model: str,
    version: int,
    manifest: bytes,
    now: datetime | None = None,
) -> bool:
    """Announce a new version to the canary ring: one retained publish. True if this call did.

    Losing the conditional write to another announcer of the same (or a newer)
    version is success: the retrain and the schedule's `ensure_announced` may
    both try to announce a freshly published champion, and whichever writes
    first has announced it. Only a rollout still older than `version` after a
    lost race is an error.
    """
    current = registry.rollout(model)
    previous = None
    if current is not None:
        if int(current["version"]) >= version:
            return False  # already announced (or superseded)
        # What "all" runs is the manifest canary devices fall back to on abort.
        previous = current["version"] if current["state"] == "all" else current.get("previous")
    doc = {
        "version": version,
        "state": "canary",
        "started_at": format_time(now or utc_now()),
        "previous": previous,
        # Written before the publish and set once it went out: a publish that
        # fails after the write is found and made good by the schedule.
        "announced": False,
    }
    try:
        registry.put_rollout(model, doc, expect_state=None)
    except StaleWrite:
        winner = registry.rollout(model)
        if winner is not None and int(winner["version"]) >= version:
            return False
        raise
    announce_canary(registry, publisher, model, doc, manifest)
    return True


def announce_canary(
    registry: Registry, publisher: Publisher, model: str, rollout: dict[str, Any], manifest: bytes
) -> None:
    """The canary ring's retained publish, then the note that it went out."""
    publisher.publish(announcement(model, Ring.CANARY), manifest, retain=True)
    with contextlib.suppress(StaleWrite):  # evaluated on meanwhile: nothing left to note
        registry.put_rollout(model, {**rollout, "announced": True}, expect_state="canary")


@dataclass
class Rollouts:
    registry: Registry
    fleet: FleetTable
    publisher: Publisher
    store: ObjectStore
    artifact_bucket: str
    policy: RolloutPolicy

    def start(self, model: str, version: int, manifest: bytes, now: datetime | None = None) -> bool:
        return start_rollout(self.registry, self.publisher, model, version, manifest, now)

    def ensure_announced(self, model: str, now: datetime | None = None) -> int | None:
        """Announce the champion if publishing it succeeded but announcing it did not."""
        champion = self.registry.champion(model)
        if champion is None:
            return None
        version = int(champion["version"])
        rollout = self.registry.rollout(model)
        if rollout is not None and int(rollout["version"]) >= version:
            if rollout["state"] == "canary" and rollout.get("announced") is False:
                # The rollout was written but its publish failed: publish it now.
                manifest = self.store.get(self.artifact_bucket, manifest_key(model, version))
                announce_canary(self.registry, self.publisher, model, rollout, manifest)
                return version
            return None
        manifest = self.store.get(self.artifact_bucket, manifest_key(model, version))
        return version if self.start(model, version, manifest, now) else None

    def tally(self, model: str, version: int, since: datetime) -> CanaryTally:
        healthy = failed = 0
        for device in self.fleet.for_model(model):
            report = device.report
            if report.ring != "canary" or parse_time(device.last_seen) < since:
                continue
            if report.version == version and report.health == "healthy":
                healthy += 1
            elif report.target_version == version and report.step in ("failed", "rolled_back"):
                failed += 1
        return CanaryTally(healthy, failed)

    def evaluate(self, model: str, now: datetime | None = None) -> str | None:
        """Move the model's rollout on if its canary reports say so. Returns the new state."""
        rollout = self.registry.rollout(model)
        if rollout is None or rollout["state"] != "canary":
            return None
        now = now or utc_now()
        version = int(rollout["version"])
        started = parse_time(rollout["started_at"])
        tally = self.tally(model, version, started)
        policy = self.policy
        if (
            tally.reports >= policy.abort_min_reports
            and tally.failed / tally.reports > policy.abort_share
        ):
            return self._transition(model, rollout, "aborted", tally, now)
        if tally.healthy >= policy.healthy_needed:
            return self._transition(model, rollout, "all", tally, now)
        if now - started > policy.window:
            return self._transition(model, rollout, "stalled", tally, now)
        return None

    def _transition(
        self, model: str, rollout: dict[str, Any], state: str, tally: CanaryTally, now: datetime
    ) -> str | None:
        version = int(rollout["version"])
        doc = {
            **rollout,
            "state": state,
            "decided_at": format_time(now),
            "healthy": tally.healthy,
            "failed": tally.failed,
        }
        try:
            self.registry.put_rollout(model, doc, expect_state="canary")
        except StaleWrite:
            return None  # another evaluator acted first
        if state == "all":
            manifest = self.store.get(self.artifact_bucket, manifest_key(model, version))
            self.publisher.publish(announcement(model, Ring.ALL), manifest, retain=True)
        elif state == "aborted":
            # Canary devices that have not updated yet must stop being offered it:
            # the canary topic goes back to what everyone else runs (or is cleared).
            previous = rollout.get("previous")
            payload = (
                b""
                if previous is None
                else self.store.get(self.artifact_bucket, manifest_key(model, int(previous)))
            )
            self.publisher.publish(announcement(model, Ring.CANARY), payload, retain=True)
        return state
