"""How a run ends, wherever it trained: publish what the gate promoted, record the run,
then start the new version's rollout.

The retrain function ends its own runs this way, and the training-job completion
function (functions.training_done) ends the runs it handed to SageMaker the same
way, so a version that shipped from a job is published, recorded and rolled out
exactly like one that shipped from the function.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from edgeloop.contract import format_time, parse_time, utc_now
from edgeloop.factory.config import ModelConfig
from functions.common.registry import Registry
from functions.common.releases import Publication, ReleaseWriter
from functions.common.storage import ObjectStore

if TYPE_CHECKING:
    from edgeloop.factory.training import TrainedModel

# A run handed to a training job, until its job's state change ends it.
HANDED_OFF = "training_elsewhere"
# How many of a model's newest runs the schedule looks through for one that never ended.
RECENT_RUNS = 20


@dataclass
class RunOutcome:
    model: str
    run_id: str
    decision: str
    reason: str
    version: int | None = None
    quarantined: int = 0
    full_bytes: int = 0
    patch_bytes: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class TrainedRun:
    """What a finished training produced, in the function or in a job."""

    record: dict[str, Any]
    promoted: bool
    model: TrainedModel | None
    tflite: bytes | None
    rows: int
    quarantined: list[dict[str, Any]]


def now() -> str:
    return format_time(utc_now())


@dataclass(frozen=True)
class RunEnding:
    store: ObjectStore
    registry: Registry
    releases: ReleaseWriter
    registry_bucket: str
    announce: Callable[[str, int], bool]

    def finish(
        self,
        config: ModelConfig,
        run_id: str,
        run: TrainedRun,
        consumed: Sequence[str] = (),
        extra: dict[str, Any] | None = None,
    ) -> RunOutcome:
        """Publish a promoted candidate, keep the run's record, mark `consumed` uploads
        trained, and only then start the rollout (a version is announced once recorded).

        `extra` adds to the registry's summary of the run (a job's name, say).
        """
        model = config.model.name
        outcome = RunOutcome(
            model,
            run_id,
            run.record["gate"]["decision"],
            run.record["gate"]["reason"],
            quarantined=len(run.quarantined),
        )
        publication: Publication | None = None
        if run.promoted and run.model is not None and run.tflite is not None:
            publication = self.releases.publish(config, run.tflite, run.model, run.record, run_id)
            outcome.version = publication.manifest.version
            outcome.full_bytes = publication.plan.full_size
            outcome.patch_bytes = [p.size for p in publication.plan.patches]
        self.store.put(
            self.registry_bucket,
            f"registry/{model}/runs/{run_id}.json",
            json.dumps(run.record, sort_keys=True).encode(),
            content_type="application/json",
        )
        self.registry.record_run(
            model,
            run_id,
            {
                "at": now(),
                "decision": outcome.decision,
                "reason": outcome.reason,
                "metrics": run.record.get("metrics", {}),
                "judged": run.record["gate"].get("judged"),
                "champion_metrics": run.record.get("champion_metrics", {}),
                "rows": run.rows,
                "quarantined": run.quarantined,
                "version": outcome.version,
                **(extra or {}),
            },
        )
        self.registry.mark_trained(model, list(consumed))
        if publication is not None:
            self.announce(model, publication.manifest.version)
        return outcome


def expire_handed_off(registry: Registry, model: str, now: datetime | None = None) -> list[str]:
    """End as failed every recent handed-off run whose job is past its deadline.

    A job's state change may never come (the rule was missing, delivery gave up
    after its retries): the schedule calls this so that no run waits forever.
    The deadline (the stopping condition plus a margin) is in the run's record;
    a state change that arrives later finds the run ended and changes nothing.
    """
    now = now or utc_now()
    ended = []
    for run in registry.runs(model, limit=RECENT_RUNS):
        if run.get("decision") != HANDED_OFF or "deadline" not in run:
            continue
        if parse_time(run["deadline"]) > now:
            continue
        if not registry.claim_run_end(model, run["run_id"], "schedule"):
            continue  # its state change is ending it now: that one decides
        reason = (
            f"training job {run.get('job')} did not report by {run['deadline']} "
            "(its stopping condition and a margin): the run is ended without a version"
        )
        registry.record_run(
            model,
            run["run_id"],
            {**run, "decision": "failed", "reason": reason, "at": format_time(now)},
        )
        ended.append(str(run["run_id"]))
    return ended
