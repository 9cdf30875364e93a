"""A handed-off run's end: its training job's state change, as EventBridge delivers it.

Completed: the job's model artefact (model.tar.gz, what the training entry point
wrote to /opt/ml/model) is read back and the run ends as any run does
(functions.common.runs): a promoted candidate is published and its rollout
started. Failed or Stopped: the run is recorded as failed with the job's reason,
nothing is published, and devices keep the model they run.

Only jobs this deployment started count: the run must be in the registry as
training elsewhere, on that very job. A repeated event finds the run finished
and changes nothing.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeloop.factory.config import ModelConfig
from edgeloop.factory.handoff import (
    DETAIL_TYPE,
    FINAL_STATES,
    RUN_ID,
    HandOffError,
    config_from_hyperparameters,
    run_prefix,
)
from edgeloop.factory.job import OUTPUT_FILES, JobOutcome
from functions.common.registry import Registry
from functions.common.runs import HANDED_OFF, RunEnding, RunOutcome, TrainedRun, now
from functions.common.storage import ObjectStore

# A model, its estimator or its record far beyond any edgeloop model is not read.
MAX_ARTEFACT_FILE = 512 * 1024 * 1024


class BadEvent(ValueError):
    """The event is not a SageMaker training job state change this function can read."""


@dataclass(frozen=True)
class JobState:
    """The fields of a state-change event's detail (describe_training_job's shape) we use."""

    name: str
    status: str
    failure_reason: str | None
    artefact: str | None
    hyperparameters: dict[str, str]

    @staticmethod
    def from_event(event: Any) -> JobState:
        if not isinstance(event, Mapping) or event.get("detail-type") != DETAIL_TYPE:
            raise BadEvent(f"not a {DETAIL_TYPE!r} event")
        detail = event.get("detail")
        if not isinstance(detail, Mapping):
            raise BadEvent("the event has no detail object")
        try:
            name, status = str(detail["TrainingJobName"]), str(detail["TrainingJobStatus"])
        except KeyError as exc:
            raise BadEvent(f"the event's detail has no {exc.args[0]}") from None
        hyperparameters = detail.get("HyperParameters") or {}
        if not isinstance(hyperparameters, Mapping):
            raise BadEvent("the event's HyperParameters is not an object")
        artefacts = detail.get("ModelArtifacts") or {}
        return JobState(
            name=name,
            status=status,
            failure_reason=detail.get("FailureReason"),
            artefact=artefacts.get("S3ModelArtifacts") if isinstance(artefacts, Mapping) else None,
            hyperparameters={str(k): str(v) for k, v in hyperparameters.items()},
        )


def _split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise BadEvent(f"{uri!r} is not an s3:// object URI")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def read_artefact(data: bytes) -> JobOutcome:
    """A job's model.tar.gz as the entry point's JobOutcome, read in memory: only the
    regular files the entry point writes, at the archive's root, each at most
    MAX_ARTEFACT_FILE bytes; anything else in the archive is ignored."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                if not member.isfile() or name not in OUTPUT_FILES:
                    continue
                if member.size > MAX_ARTEFACT_FILE:
                    raise HandOffError(f"{name} in the job's artefact is {member.size} bytes")
                extracted = archive.extractfile(member)
                assert extracted is not None  # a regular file always has contents
                files[name] = extracted.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise HandOffError(f"the job's model artefact is not a readable tar.gz: {exc}") from exc
    return JobOutcome.of_files(files)


@dataclass(frozen=True)
class JobCompletion:
    store: ObjectStore
    registry: Registry
    ending: RunEnding
    data_bucket: str
    configs: Mapping[str, ModelConfig]

    def complete(self, state: JobState) -> RunOutcome | None:
        """End the run `state`'s job trained, or None when there is nothing to end
        (a state that is not final, a job this deployment did not start, a repeat)."""
        if state.status not in FINAL_STATES:
            return None
        run_id = state.hyperparameters.get(RUN_ID)
        if run_id is None:
            return None  # not started by edgeloop
        config = config_from_hyperparameters(state.hyperparameters)
        model = config.model.name
        if model not in self.configs:
            return None
        recorded = self.registry.run(model, run_id)
        if recorded is None or recorded.get("job") != state.name:
            return None
        if recorded.get("decision") != HANDED_OFF:
            return None  # a repeated event: the run has ended already
        if not self.registry.claim_run_end(model, run_id, state.name):
            return None  # the same event, delivered twice at once: the other one ends it
        try:
            return self._end(state, config, run_id, recorded)
        except BaseException:
            # EventBridge retries the event: let the retry end the run.
            self.registry.release_run_end(model, run_id)
            raise

    def _end(
        self, state: JobState, config: ModelConfig, run_id: str, recorded: dict[str, Any]
    ) -> RunOutcome:
        model = config.model.name
        kept = {"job": state.name, "estimate": recorded.get("estimate")}
        if state.status != "Completed":
            reason = (
                f"training job {state.name} {state.status.lower()}: "
                f"{state.failure_reason or 'SageMaker gave no reason'}"
            )
            self.registry.record_run(
                model, run_id, {**kept, "decision": "failed", "reason": reason, "at": now()}
            )
            return RunOutcome(model, run_id, "failed", reason)
        if state.artefact is None:
            raise BadEvent(f"training job {state.name} completed without ModelArtifacts")
        bucket, key = _split_s3(state.artefact)
        if bucket != self.data_bucket:
            raise BadEvent(f"the artefact is in {bucket}, not this deployment's data bucket")
        output = run_prefix(model, run_id) + "output/"
        if not key.startswith(output):
            # Only this run's own job writes there; anything else is not its result.
            raise BadEvent(f"the artefact {key!r} is not under this run's output {output!r}")
        job = read_artefact(self.store.get(bucket, key))
        run = TrainedRun(
            record=job.record,
            promoted=job.promoted,
            model=job.trained(),
            tflite=job.tflite,
            rows=int(job.record.get("rows") or 0),
            quarantined=list(job.record.get("quarantined") or []),
        )
        return self.ending.finish(config, run_id, run, extra=kept)
