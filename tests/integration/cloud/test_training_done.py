"""A handed-off run ends through the completion function: its job's state change, as
EventBridge delivers it, publishes and rolls out the candidate, or records why not."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from edgeloop.contract import format_time, parse_time, utc_now
from edgeloop.contract.trust_targets import RolloutPointer
from edgeloop.local.training_jobs import LocalTrainingJobs, state_change_event
from functions.common.registry import Registry
from functions.common.runs import expire_handed_off
from functions.common.storage import ObjectMissing
from functions.evaluate_rollouts import handler as evaluate_rollouts
from functions.retrain import handler as retrain
from functions.training_done import handler as training_done
from functions.training_done.logic import BadEvent
from tests.support_aws import (
    FakeLambdaContext,
    LocalCloud,
    digit_batches,
    npz_bytes,
    registry_of,
    report_heartbeat,
    training_job_names,
    upload_round,
)

ROLE = "arn:aws:iam::123456789012:role/edgeloop-training"
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/edgeloop:functions"


def _force_handoff(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINING_ROLE_ARN", ROLE)
    monkeypatch.setenv("TRAINING_IMAGE_URI", IMAGE)
    monkeypatch.setenv("HANDOFF_MEMORY_BYTES", "1024")
    cloud.new_container()


def _handed_off(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> tuple[Registry, dict[str, Any]]:
    """A run of ten digit batches handed to a job that has not run yet, and its record."""
    _force_handoff(cloud, monkeypatch)
    retrain.handler(upload_round(cloud, digit_batches(10, 0, 30), 1), FakeLambdaContext())
    registry = registry_of(cloud)
    handed = registry.runs("digits")[0]
    assert handed["decision"] == "training_elsewhere"
    return registry, handed


def _run_job(cloud: LocalCloud, name: str) -> dict[str, Any]:
    jobs = LocalTrainingJobs(cloud.client("s3"), cloud.client("sagemaker"), "eu-west-1")
    return jobs.run(name)


def test_a_completed_job_ships_its_candidate_to_the_fleet(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    report_heartbeat("pump-7", model="digits", version=None, health="no_model")
    _force_handoff(cloud, monkeypatch)
    retrain.handler(upload_round(cloud, digit_batches(40, 0, 30), 1), FakeLambdaContext())
    registry = registry_of(cloud)
    (handed,) = registry.runs("digits")
    assert handed["decision"] == "training_elsewhere"
    assert cloud.pointer("digits") is None

    event = _run_job(cloud, handed["job"])
    assert event["detail"]["TrainingJobStatus"] == "Completed"
    answer = training_done.handler(event, FakeLambdaContext())
    assert answer == {"job": handed["job"], "ended": True, "decision": "promoted", "version": 1}

    (run,) = registry.runs("digits")  # the same run, now ended
    assert run["run_id"] == handed["run_id"]
    assert (run["decision"], run["version"], run["job"]) == ("promoted", 1, handed["job"])
    assert run["rows"] == 40 * 30
    assert run["estimate"] == handed["estimate"]
    assert registry.latest_version("digits") == 1
    # Published and rolled out as an in-function run is: pump-7 (stage 3) is offered v1.
    assert cloud.pointer("digits") == RolloutPointer("digits", 1, None, 50)
    offer, device = cloud.offer("digits", "pump-7", tmp_path)
    assert offer.version == 1
    assert offer.model is not None
    assert len(device.download(offer.model)) == offer.model.length

    # EventBridge delivers at least once: the same event again changes nothing.
    again = training_done.handler(event, FakeLambdaContext())
    assert again == {"job": handed["job"], "ended": False}
    assert registry.latest_version("digits") == 1


def test_a_failed_job_records_its_reason_and_devices_keep_their_model(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    retrain.handler(upload_round(cloud, digit_batches(40, 0, 30), 1), FakeLambdaContext())
    assert cloud.pointer("digits") == RolloutPointer("digits", 1, None, 100)
    # The first round's uploads expire (the bucket's lifecycle): the next run has only
    # the second round's.
    s3, bucket = cloud.client("s3"), cloud.names["DATA_BUCKET"]
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix="data/digits/")["Contents"]:
        s3.delete_object(Bucket=bucket, Key=obj["Key"])
    _force_handoff(cloud, monkeypatch)
    # Their headers are sound (the estimate counts them) but every value is far past
    # model.max_abs_value: the job quarantines each one and has nothing to train on.
    X, y = load_digits(return_X_y=True)
    wild = [npz_bytes(np.full_like(X[:30], 1e12), y[:30]) for _ in range(3)]
    retrain.handler(upload_round(cloud, wild, 2), FakeLambdaContext())
    registry = registry_of(cloud)
    handed = registry.runs("digits")[0]
    assert handed["decision"] == "training_elsewhere"

    event = _run_job(cloud, handed["job"])
    assert event["detail"]["TrainingJobStatus"] == "Failed"
    assert event["detail"]["FailureReason"].startswith("NoUsableData: ")
    answer = training_done.handler(event, FakeLambdaContext())
    assert answer == {"job": handed["job"], "ended": True, "decision": "failed", "version": None}
    run = registry.runs("digits")[0]
    assert run["run_id"] == handed["run_id"]
    assert run["decision"] == "failed"
    assert run["reason"] == (
        f"training job {handed['job']} failed: {event['detail']['FailureReason']}"
    )
    assert registry.latest_version("digits") == 1
    assert cloud.pointer("digits") == RolloutPointer("digits", 1, None, 100)


def test_a_stopped_job_is_a_failed_run_and_an_unknown_job_is_left_alone(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, handed = _handed_off(cloud, monkeypatch)
    job = cloud.client("sagemaker").describe_training_job(TrainingJobName=handed["job"])
    stranger = state_change_event(
        {**job, "TrainingJobName": "someone-elses-job"}, "Completed", None, "eu-west-1"
    )
    assert training_done.handler(stranger, FakeLambdaContext())["ended"] is False
    stopped = state_change_event(
        job, "Stopped", "MaxRuntimeExceeded: the stopping condition was reached", "eu-west-1"
    )
    training_done.handler(stopped, FakeLambdaContext())
    run = registry.runs("digits")[0]
    assert run["decision"] == "failed"
    assert run["reason"].endswith("stopped: MaxRuntimeExceeded: the stopping condition was reached")
    assert registry.latest_version("digits") == 0


def test_a_job_that_never_reports_is_ended_by_the_schedule_and_a_late_report_changes_nothing(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, handed = _handed_off(cloud, monkeypatch)
    # The stopping condition (6 hours) and an hour's margin.
    deadline = parse_time(handed["deadline"])
    waited = deadline - parse_time(handed["at"])
    assert timedelta(hours=7) - timedelta(minutes=1) < waited <= timedelta(hours=7)
    assert expire_handed_off(registry, "digits", deadline - timedelta(seconds=1)) == []
    assert registry.runs("digits")[0]["decision"] == "training_elsewhere"

    # The schedule, once the deadline has passed (moved here into the past).
    registry.record_run(
        "digits", handed["run_id"], {**handed, "deadline": format_time(utc_now() - timedelta(1))}
    )
    evaluate_rollouts.handler({}, FakeLambdaContext())
    run = registry.runs("digits")[0]
    assert (run["run_id"], run["decision"]) == (handed["run_id"], "failed")
    assert run["reason"].startswith(f"training job {handed['job']} did not report by ")

    late = _run_job(cloud, handed["job"])
    assert training_done.handler(late, FakeLambdaContext())["ended"] is False
    assert registry.latest_version("digits") == 0


def test_only_one_of_two_deliveries_at_once_ends_the_run_and_a_failed_ending_is_retried(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, handed = _handed_off(cloud, monkeypatch)
    event = _run_job(cloud, handed["job"])
    # Another delivery of the same event is ending the run right now.
    assert registry.claim_run_end("digits", handed["run_id"], "another delivery")
    assert training_done.handler(event, FakeLambdaContext())["ended"] is False
    assert registry.runs("digits")[0]["decision"] == "training_elsewhere"
    registry.release_run_end("digits", handed["run_id"])  # it failed and gave the claim back

    # This delivery fails half-way (the artefact cannot be read yet): the claim is given
    # back, and EventBridge's retry ends the run.
    s3 = cloud.client("s3")
    bucket, key = event["detail"]["ModelArtifacts"]["S3ModelArtifacts"][5:].split("/", 1)
    artefact = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(ObjectMissing):
        training_done.handler(event, FakeLambdaContext())
    s3.put_object(Bucket=bucket, Key=key, Body=artefact)
    answer = training_done.handler(event, FakeLambdaContext())
    assert answer == {"job": handed["job"], "ended": True, "decision": "promoted", "version": 1}


def test_uploads_during_a_job_wait_for_the_run_after_it(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, handed = _handed_off(cloud, monkeypatch)
    jobs = training_job_names(cloud)
    # While the job runs, new uploads start no run and no second job.
    retrain.handler(upload_round(cloud, digit_batches(4, 600, 30), 2), FakeLambdaContext())
    assert registry.runs("digits")[0]["run_id"] == handed["run_id"]
    assert len(registry.pending_uploads("digits")) == 4
    assert training_job_names(cloud) == jobs

    training_done.handler(_run_job(cloud, handed["job"]), FakeLambdaContext())
    assert registry.runs("digits")[0]["decision"] == "promoted"
    # The next upload starts the run after it, over everything that waited.
    retrain.handler(upload_round(cloud, digit_batches(1, 900, 30), 3), FakeLambdaContext())
    latest = registry.runs("digits")[0]
    assert latest["run_id"] != handed["run_id"]
    assert latest["decision"] == "training_elsewhere"
    assert registry.pending_uploads("digits") == []


def test_an_artefact_outside_the_runs_own_output_is_not_its_result(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event names where the artefact is; only the run's own job writes under its
    output prefix, so an artefact anywhere else in the data bucket is refused."""
    registry, handed = _handed_off(cloud, monkeypatch)
    event = _run_job(cloud, handed["job"])
    s3 = cloud.client("s3")
    bucket, key = event["detail"]["ModelArtifacts"]["S3ModelArtifacts"][5:].split("/", 1)
    elsewhere = f"data/digits/pump-1/{key.rsplit('/', 1)[-1]}"
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=elsewhere, Body=body)
    artefacts = {"S3ModelArtifacts": f"s3://{bucket}/{elsewhere}"}
    moved = {**event, "detail": {**event["detail"], "ModelArtifacts": artefacts}}
    with pytest.raises(BadEvent, match=r"not under this run's output"):
        training_done.handler(moved, FakeLambdaContext())
    assert registry.runs("digits")[0]["decision"] == "training_elsewhere"


def test_the_schedule_leaves_a_run_whose_state_change_is_ending_it(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, handed = _handed_off(cloud, monkeypatch)
    assert registry.claim_run_end("digits", handed["run_id"], "a delivery")
    late = parse_time(handed["deadline"]) + timedelta(seconds=1)
    assert expire_handed_off(registry, "digits", now=late) == []
    assert registry.runs("digits")[0]["decision"] == "training_elsewhere"
