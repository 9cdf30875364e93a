"""Staged rollouts: named canaries, then growing shares of the fleet, abort on failures.

A rollout is a small state machine kept in the registry, one item per model:

    rolling → (next stage) … → complete   each stage has enough installs in its window
    rolling → aborted                     the stage's failure share passed its threshold
    rolling → stalled                     the window closed; the reason says what is missing
    rolling ⇄ paused, stalled → rolling   the operator (`edgeloop rollout`)
    any but complete → aborted            the operator

Stage 0 is the named canaries; stage i covers devices below the i-th percentage
of the model's plan (edgeloop.contract.stages). Which stage a device is in is
the cloud's to say: its thing name and the canary group, never its report.

Work per status report is constant: the outcome is counted in the stage's
counter (functions.common.fleet), and evaluating reads the rollout and one
counter. Only entering a stage reads the fleet, and then at most as many index
entries as the stage needs installs, to find out whether the stage has devices
at all: a stage without any advances at once and says so in the history.

Every change is a conditional write on the rollout's revision, so two
evaluators never both act. What a change must publish is written with it
(`publish`) and cleared once it went out; the schedule finishes a publish that
failed half-way. Publishing is two things, in this order: sign the model's
rollout pointer in the fleet's TUF repository (the only thing a device
believes: which version its stage runs), then nudge the devices whose stage
changed to refresh (retained messages on their band's and own topics). A
nudge that went out before its pointer would only cost a refresh that finds
nothing new; a pointer without its nudge is found at the next nudge or timer.
Each nudge carries the repository's metadata as it stands after the pointer
moved (and the offered version's spec) as far as one 5 KB IoT message allows,
so a nudged device asks the CDN for little more than the patch.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from edgeloop.contract import (
    IOT_MESSAGE_UNIT,
    Nudge,
    StagePlan,
    ThingTopics,
    announcement,
    format_time,
    parse_time,
    utc_now,
)
from edgeloop.contract.trust_targets import RolloutPointer
from edgeloop.factory.config import RolloutSection
from edgeloop.trust import TrustRepository
from edgeloop.trust.repository import TrustError
from functions.common.fleet import FleetTable
from functions.common.publisher import Publisher
from functions.common.registry import Registry, StaleWrite

log = logging.getLogger(__name__)

HISTORY_LIMIT = 40
# Failures it takes to abort, however small the stage: one device can hold back its
# own update, never the fleet's.
MIN_FAILED_TO_ABORT = 2


def nudge_budget(topic: str) -> int:
    """The payload bytes a nudge on `topic` may take and still be one IoT metering unit
    (AWS counts the topic too): carrying more would double what the publish costs."""
    return IOT_MESSAGE_UNIT - len(topic.encode())


class State(StrEnum):
    ROLLING = "rolling"
    PAUSED = "paused"
    STALLED = "stalled"
    COMPLETE = "complete"
    ABORTED = "aborted"

    @property
    def counting(self) -> bool:
        """Outcomes reported in this state still count toward the stage."""
        return self in (State.ROLLING, State.PAUSED, State.STALLED)


@dataclass(frozen=True)
class Repair:
    """What the schedule's `ensure_announced` made good, for its log."""

    version: int
    what: str


class RolloutRefused(ValueError):
    """An operator's request that does not apply to the rollout as it stands."""


@dataclass(frozen=True)
class Policy:
    healthy_to_advance: int
    window: timedelta
    abort_share: float
    abort_min_reports: int

    @staticmethod
    def of(section: RolloutSection) -> Policy:
        return Policy(
            section.healthy_to_advance,
            timedelta(minutes=section.window_minutes),
            section.abort_share,
            section.abort_min_reports,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "healthy_to_advance": self.healthy_to_advance,
            "window_seconds": self.window.total_seconds(),
            "abort_share": self.abort_share,
            "abort_min_reports": self.abort_min_reports,
        }

    @staticmethod
    def from_json(doc: dict[str, Any]) -> Policy:
        return Policy(
            int(doc["healthy_to_advance"]),
            timedelta(seconds=float(doc["window_seconds"])),
            float(doc["abort_share"]),
            int(doc["abort_min_reports"]),
        )


@dataclass(frozen=True)
class Publish:
    """What a change still has to publish: the rollout's pointer as it now stands, then a
    nudge naming `version` (None: the rollout offers nothing) on bands [low, high) and,
    if `canaries`, on each named canary's own topic."""

    version: int | None
    low: int
    high: int
    canaries: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "low": self.low,
            "high": self.high,
            "canaries": self.canaries,
        }

    @staticmethod
    def from_json(doc: dict[str, Any]) -> Publish:
        version = doc["version"]
        return Publish(
            None if version is None else int(version),
            int(doc["low"]),
            int(doc["high"]),
            bool(doc["canaries"]),
        )


@dataclass(frozen=True)
class Rollout:
    model: str
    version: int
    previous: int | None  # what devices the rollout has not reached run: offered again on abort
    state: State
    stage: int
    plan: StagePlan
    policy: Policy
    started_at: str
    stage_started_at: str
    needed: int  # installs the current stage needs to advance
    revision: int = 0
    # Devices of the current stage that ever reported, counted up to what the abort
    # rule needs to know (max(healthy_to_advance, abort_min_reports)).
    enrolled: int = 0
    reason: str = ""
    publish: Publish | None = None
    history: tuple[dict[str, Any], ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "previous": self.previous,
            "state": self.state.value,
            "stage": self.stage,
            "stages": list(self.plan.percentages),
            "policy": self.policy.to_json(),
            "started_at": self.started_at,
            "stage_started_at": self.stage_started_at,
            "needed": self.needed,
            "enrolled": self.enrolled,
            "revision": self.revision,
            "reason": self.reason,
            "publish": None if self.publish is None else self.publish.to_json(),
            "history": list(self.history),
        }

    @staticmethod
    def from_json(doc: dict[str, Any]) -> Rollout:
        previous = doc.get("previous")
        publish = doc.get("publish")
        return Rollout(
            model=str(doc["model"]),
            version=int(doc["version"]),
            previous=None if previous is None else int(previous),
            state=State(doc["state"]),
            stage=int(doc["stage"]),
            plan=StagePlan(tuple(int(p) for p in doc["stages"])),
            policy=Policy.from_json(doc["policy"]),
            started_at=str(doc["started_at"]),
            stage_started_at=str(doc["stage_started_at"]),
            needed=int(doc["needed"]),
            enrolled=int(doc.get("enrolled", doc["needed"])),
            revision=int(doc.get("revision", 0)),
            reason=str(doc.get("reason", "")),
            publish=None if publish is None else Publish.from_json(publish),
            history=tuple(doc.get("history", ())),
        )

    def stage_name(self) -> str:
        return self.plan.describe(self.stage)

    def noted(self, at: datetime, event: str, detail: str = "") -> Rollout:
        entry = {
            "at": format_time(at),
            "stage": max(self.stage, 0),
            "event": event,
            "detail": detail,
        }
        return replace(self, history=(*self.history, entry)[-HISTORY_LIMIT:])


def abort_is_warranted(policy: Policy, enrolled: int, installed: int, failed: int) -> bool:
    """Whether a stage's outcomes are evidence enough to abort the rollout.

    All of: more than `abort_share` of the outcomes are failures; there are
    `abort_min_reports` outcomes, or every device the stage is known to have
    reported (a small stage); at least MIN_FAILED_TO_ABORT devices failed; and
    the failures are at least `abort_share` of the stage's enrolled devices. So
    one device's failure (a broken board, or a device lying) never aborts: it
    holds back only its own update.
    """
    reports = installed + failed
    if reports == 0 or failed / reports <= policy.abort_share:
        return False
    if reports < min(policy.abort_min_reports, max(enrolled, 1)):
        return False
    return failed >= max(MIN_FAILED_TO_ABORT, math.ceil(policy.abort_share * enrolled))


def read_rollout(registry: Registry, model: str) -> Rollout | None:
    """The model's rollout as the registry keeps it: all the status function reads of it."""
    doc = registry.rollout(model)
    return None if doc is None else Rollout.from_json({"model": model, **doc})


@dataclass
class Rollouts:
    registry: Registry
    fleet: FleetTable
    # None for the operator's command line, which only writes its decision: the
    # schedule carries out what it leaves to publish (an abort's pointer and nudges).
    publisher: Publisher | None
    trust: Callable[[], TrustRepository] | None
    # The named canaries of a model (members of the canary thing group).
    canaries: Callable[[str], list[str]]
    # The model's rollout settings (its config's [rollout] section).
    settings: Callable[[str], RolloutSection]

    # --- reading ------------------------------------------------------------------

    def get(self, model: str) -> Rollout | None:
        return read_rollout(self.registry, model)

    # --- starting -------------------------------------------------------------------

    def start(self, model: str, version: int, now: datetime | None = None) -> bool:
        """Offer a new version to the first stage that has devices. True if this call did.

        Losing the conditional write to another starter of the same (or a newer)
        version is success: the retrain and the schedule's `ensure_announced` may
        both start a freshly published champion, and whichever writes first has
        started it. Only a rollout still older than `version` after a lost race
        is an error.
        """
        now = now or utc_now()
        current = self.get(model)
        previous = None
        if current is not None:
            if current.version >= version:
                return False  # already started (or superseded)
            # What the devices a new rollout has not reached yet run: the last
            # version that reached everyone, offered again if this one aborts.
            previous = current.version if current.state is State.COMPLETE else current.previous
        section = self.settings(model)
        rollout = Rollout(
            model=model,
            version=version,
            previous=previous,
            state=State.ROLLING,
            stage=-1,
            plan=StagePlan(section.stages),
            policy=Policy.of(section),
            started_at=format_time(now),
            stage_started_at=format_time(now),
            needed=0,
        )
        rollout = self._enter(rollout.noted(now, "started", f"v{version}"), 0, now)
        try:
            self.registry.put_rollout(model, rollout.to_json(), expect_revision=None)
        except StaleWrite:
            winner = self.get(model)
            if winner is not None and winner.version >= version:
                return False
            raise
        self._publish(rollout)
        return True

    def ensure_announced(self, model: str, now: datetime | None = None) -> Repair | None:
        """Finish what a change left unpublished, or start a champion nobody started."""
        champion = self.registry.champion(model)
        rollout = self.get(model)
        if rollout is not None and rollout.publish is not None:
            self._publish(rollout)
            return Repair(rollout.version, "finished a publish left half-done")
        if champion is None:
            return None
        version = int(champion["version"])
        if self.trust is None or (rollout is not None and rollout.version >= version):
            return None
        if not self.start(model, version, now):
            return None
        return Repair(version, "started the rollout of a champion nobody had started")

    # --- evaluating -------------------------------------------------------------------

    def evaluate(
        self, model: str, now: datetime | None = None, rollout: Rollout | None = None
    ) -> str | None:
        """Move the rollout on if its current stage's counters say so. Returns the new state,
        or the stage entered as `stage N`."""
        rollout = rollout or self.get(model)
        if rollout is None or rollout.state is not State.ROLLING:
            return None
        now = now or utc_now()
        counts = self.registry.stage_counts(model, rollout.version, rollout.stage)
        installed, failed = counts["installed"], counts["failed"]
        reports = installed + failed
        policy = rollout.policy
        if abort_is_warranted(policy, rollout.enrolled, installed, failed):
            reason = (
                f"{rollout.stage_name()}: {failed} of {reports} devices failed to install "
                f"v{rollout.version}, over the {policy.abort_share:.0%} allowed"
            )
            return self._write(self._abort(rollout, now, reason))
        # Failures short of an abort hold back only the devices that failed: a stage
        # too small to find its installs elsewhere passes on those of the others.
        if installed >= min(rollout.needed, max(rollout.enrolled - failed, 0)):
            detail = f"{installed} installed, {failed} failed"
            if rollout.stage >= rollout.plan.last:
                done = replace(rollout, state=State.COMPLETE, reason="")
                return self._write(done.noted(now, "complete", detail))
            moved = self._enter(rollout.noted(now, "stage passed", detail), rollout.stage + 1, now)
            return self._write(moved)
        if now - parse_time(rollout.stage_started_at) > policy.window:
            reason = (
                f"{rollout.stage_name()}: {installed} of {rollout.needed} installs needed within "
                f"{policy.window.total_seconds() / 60:g} min ({failed} failed); "
                "the others have not reported the version. Resume with `edgeloop rollout "
                "resume` to give the stage another window, or abort"
            )
            stalled = replace(rollout, state=State.STALLED, reason=reason)
            return self._write(stalled.noted(now, "stalled", reason))
        return None

    # --- the operator -----------------------------------------------------------------

    def pause(self, model: str, now: datetime | None = None) -> Rollout:
        return self._operate(model, "pause", {State.ROLLING}, now)

    def resume(self, model: str, now: datetime | None = None) -> Rollout:
        return self._operate(model, "resume", {State.PAUSED, State.STALLED}, now)

    def abort(self, model: str, now: datetime | None = None) -> Rollout:
        return self._operate(model, "abort", {State.ROLLING, State.PAUSED, State.STALLED}, now)

    def _operate(
        self, model: str, action: str, allowed: set[State], now: datetime | None
    ) -> Rollout:
        now = now or utc_now()
        rollout = self.get(model)
        if rollout is None:
            raise RolloutRefused(f"{model} has no rollout: nothing to {action}")
        if rollout.state not in allowed:
            states = " or ".join(sorted(s.value for s in allowed))
            raise RolloutRefused(
                f"cannot {action} the v{rollout.version} rollout of {model}: it is "
                f"{rollout.state.value}, and {action} applies only when it is {states}"
            )
        if action == "pause":
            changed = replace(rollout, state=State.PAUSED, reason="paused by the operator")
        elif action == "resume":
            # A fresh window for the stage: the operator decided to give it more time.
            changed = replace(
                rollout, state=State.ROLLING, reason="", stage_started_at=format_time(now)
            )
        else:
            changed = self._abort(rollout, now, "aborted by the operator")
        if action != "abort":  # an abort notes itself, with its reason
            changed = changed.noted(now, action + ("d" if action.endswith("e") else "ed"))
        if self._write(changed) is None:
            raise RolloutRefused(f"the {model} rollout changed meanwhile; look again and retry")
        return replace(changed, revision=changed.revision + 1)  # as `_write` stored it

    # --- transitions -----------------------------------------------------------------

    def _abort(self, rollout: Rollout, now: datetime, reason: str) -> Rollout:
        """Every device the rollout reached is offered `previous` again (or nothing).

        Devices that installed the aborted version go back to `previous` (the
        signed pointer is followed both ways); those that had not yet updated
        no longer can. With no previous version, devices keep what they run.
        """
        bands = rollout.plan.bands_covered(max(rollout.stage, 0))
        aborted = replace(
            rollout,
            state=State.ABORTED,
            reason=reason,
            publish=Publish(rollout.previous, bands.start, bands.stop, canaries=True),
        )
        return aborted.noted(now, "aborted", reason)

    def _enter(self, rollout: Rollout, stage: int, now: datetime) -> Rollout:
        """Move to `stage`, skipping every stage no device of the model ever reported in."""
        first_band = rollout.plan.bands_covered(max(rollout.stage, 0)).stop
        starting = rollout.stage < 0
        policy = rollout.policy
        while True:
            if stage == 0:
                known = len(self.canaries(rollout.model))
            else:
                known = self.fleet.count_in_bands(
                    rollout.model,
                    rollout.plan.bands_added(stage),
                    max(policy.healthy_to_advance, policy.abort_min_reports),
                )
            needed = min(policy.healthy_to_advance, known)
            rollout = replace(
                rollout,
                stage=stage,
                needed=needed,
                enrolled=known,
                stage_started_at=format_time(now),
            )
            if needed > 0 or stage == rollout.plan.last:
                break
            rollout = rollout.noted(
                now,
                "stage skipped",
                "no named canaries" if stage == 0 else "no device of this stage has reported yet",
            )
            stage += 1
        entered = rollout.noted(
            now,
            "stage entered",
            f"needs {rollout.needed} installs"
            if rollout.needed
            else "no device of this stage has reported yet; it completes at its first evaluation",
        )
        last_band = rollout.plan.bands_covered(rollout.stage).stop
        return replace(
            entered,
            publish=Publish(rollout.version, first_band, last_band, canaries=starting),
        )

    def _write(self, changed: Rollout) -> str | None:
        expected = changed.revision
        changed = replace(changed, revision=expected + 1)
        try:
            self.registry.put_rollout(changed.model, changed.to_json(), expect_revision=expected)
        except StaleWrite:
            return None  # another evaluator acted first
        if changed.state is State.ABORTED:
            self.registry.mark_aborted(changed.model, changed.version, changed.reason)
        if changed.publish is not None:
            self._publish(changed)
        if changed.state is State.ROLLING:
            return f"stage {changed.stage}"
        return changed.state.value

    def pointer(self, rollout: Rollout, canaries: list[str] | None = None) -> RolloutPointer:
        """The signed pointer for a rollout that is not aborted: its version for the named
        canaries and the share of the fleet its stage covers, `previous` for the rest."""
        percent = 0 if rollout.stage <= 0 else rollout.plan.percentages[rollout.stage - 1]
        named = self.canaries(rollout.model) if canaries is None else canaries
        return RolloutPointer(
            rollout.model,
            offered=rollout.version,
            previous=rollout.previous,
            percent=percent,
            canaries=tuple(sorted(named)),
        )

    def _superseded(self, rollout: Rollout) -> bool:
        """Whether `rollout`'s pending stage change lost to an abort or a newer rollout."""
        if rollout.state is State.ABORTED:
            return False
        stored = self.get(rollout.model)
        if stored is None or (
            stored.version == rollout.version and stored.state is not State.ABORTED
        ):
            return False
        log.info(
            "event=publish_superseded model=%s version=%s by=%s",
            rollout.model,
            rollout.version,
            f"v{stored.version} {stored.state.value}",
        )
        return True

    def _publish(self, rollout: Rollout) -> None:
        """Carry out the rollout's pending publish, then note that it went out."""
        job = rollout.publish
        if job is None or self.publisher is None or self.trust is None:
            return
        # A stage change decided before an abort (the operator's, or another
        # evaluator's) or before a newer rollout started must not publish after it.
        if self._superseded(rollout):
            return
        trust = self.trust()
        # Looked up once: the pointer names them, and they are nudged.
        canaries = self.canaries(rollout.model)
        if rollout.state is State.ABORTED:
            self.registry.mark_aborted(rollout.model, rollout.version, rollout.reason)
            trust.withdraw(rollout.model, rollout.version, back_to=rollout.previous)
        else:
            try:
                trust.set_pointer(self.pointer(rollout, canaries))
            except TrustError:
                # The abort landed after the check above and withdrew the version first:
                # the repository refuses to offer it again, and the abort stands.
                if self._superseded(rollout):
                    return
                raise
        # Read after the pointer moved: the metadata that says so rides in the nudge.
        carried = trust.nudge_files(rollout.model, job.version)
        payloads: dict[int, bytes] = {}

        def payload(topic: str) -> bytes:
            budget = nudge_budget(topic)
            if budget not in payloads:
                nudge = Nudge.filled(rollout.model, job.version, carried, budget)
                payloads[budget] = nudge.to_bytes()
            return payloads[budget]

        if job.canaries:
            for thing in canaries:
                topic = ThingTopics(thing).nudge
                self.publisher.publish(topic, payload(topic), retain=True)
        for band in range(job.low, job.high):
            topic = announcement(rollout.model, band)
            self.publisher.publish(topic, payload(topic), retain=True)
        done = replace(rollout, publish=None, revision=rollout.revision + 1)
        # Evaluated on meanwhile: whoever wrote last noted or redid the publish.
        with contextlib.suppress(StaleWrite):
            self.registry.put_rollout(
                rollout.model, done.to_json(), expect_revision=rollout.revision
            )
