"""The retrain handler hands a run it cannot hold to a SageMaker training job (moto records it)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgeloop.factory.handoff import (
    ENTRY_POINT,
    RUN_ID,
    config_from_hyperparameters,
    manifest_keys,
)
from functions.retrain import handler as retrain
from tests.support_aws import (
    FakeLambdaContext,
    LocalCloud,
    digit_batches,
    registry_of,
    training_job_names,
    upload_round,
)

ROLE = "arn:aws:iam::123456789012:role/edgeloop-training"
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/edgeloop:functions"


def _handoff_env(monkeypatch: pytest.MonkeyPatch, memory_limit: int) -> None:
    monkeypatch.setenv("TRAINING_ROLE_ARN", ROLE)
    monkeypatch.setenv("TRAINING_IMAGE_URI", IMAGE)
    monkeypatch.setenv("HANDOFF_MEMORY_BYTES", str(memory_limit))


def _job(cloud: LocalCloud, name: str) -> dict[str, Any]:
    job: dict[str, Any] = cloud.client("sagemaker").describe_training_job(TrainingJobName=name)
    return job


def test_a_run_above_the_memory_limit_starts_a_training_job_on_exactly_its_uploads(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    _handoff_env(monkeypatch, memory_limit=1024)
    cloud.new_container()
    # An upload outside the run's model: never in its manifest.
    cloud.put_batch("vibration", "pump-1", "0001.npz", b"not this model's")
    cloud.receive_event(1)
    event = upload_round(cloud, digit_batches(6, 0, 30), 1)
    assert retrain.handler(event, FakeLambdaContext()) == {"batchItemFailures": []}

    registry = registry_of(cloud)
    (run,) = registry.runs("digits")
    assert run["decision"] == "training_elsewhere"
    assert run["objects"] == 6
    assert "above the 0 MiB limit" in run["reason"]
    assert run["estimate"]["decoded_bytes"] == 6 * 30 * 65 * 8
    assert registry.pending_uploads("digits") == []  # the job consumed them
    assert registry.latest_version("digits") == 0  # nothing trained here

    job = _job(cloud, run["job"])
    assert job["RoleArn"] == ROLE
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert job["AlgorithmSpecification"]["ContainerEntrypoint"] == list(ENTRY_POINT)
    assert job["StoppingCondition"]["MaxRuntimeInSeconds"] == 6 * 3600
    assert job["HyperParameters"][RUN_ID] == run["run_id"]
    config = config_from_hyperparameters(job["HyperParameters"])
    assert config.model.name == "digits"
    assert config.train.params == {"hidden_layer_sizes": (32,)}
    (channel,) = job["InputDataConfig"]  # no champion yet, no reference set
    source = channel["DataSource"]["S3DataSource"]
    assert source["S3DataType"] == "ManifestFile"
    bucket, key = source["S3Uri"].removeprefix("s3://").split("/", 1)
    assert bucket == cloud.names["DATA_BUCKET"]
    assert key == f"training/digits/{run['run_id']}/manifest.json"
    body = cloud.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    prefix, keys = manifest_keys(body)
    assert prefix == f"s3://{bucket}/"
    assert sorted(keys) == sorted(f"data/digits/pump-{i % 5}/0001{i:04d}.npz" for i in range(6))
    output = job["OutputDataConfig"]["S3OutputPath"]
    assert output == f"s3://{bucket}/training/digits/{run['run_id']}/output"


def test_a_run_within_the_limits_trains_here_and_starts_no_job(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    _handoff_env(monkeypatch, memory_limit=2 * 1024**3)
    cloud.new_container()
    before = training_job_names(cloud)
    retrain.handler(upload_round(cloud, digit_batches(40, 0, 30), 1), FakeLambdaContext())
    (run,) = registry_of(cloud).runs("digits")
    assert run["decision"] == "promoted"
    assert run["rows"] == 40 * 30
    assert training_job_names(cloud) == before


def test_without_a_training_role_a_large_run_trains_here_on_what_fits(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDOFF_MEMORY_BYTES", "1024")
    cloud.new_container()
    before = training_job_names(cloud)
    retrain.handler(upload_round(cloud, digit_batches(40, 0, 30), 1), FakeLambdaContext())
    (run,) = registry_of(cloud).runs("digits")
    assert run["decision"] == "promoted"
    assert training_job_names(cloud) == before


def test_a_run_after_a_promotion_hands_the_champion_to_the_job(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    retrain.handler(upload_round(cloud, digit_batches(40, 0, 30), 1), FakeLambdaContext())
    assert registry_of(cloud).latest_version("digits") == 1
    _handoff_env(monkeypatch, memory_limit=1024)
    cloud.new_container()
    retrain.handler(upload_round(cloud, digit_batches(5, 1200, 30), 2), FakeLambdaContext())
    run = registry_of(cloud).runs("digits")[0]
    assert run["decision"] == "training_elsewhere"
    channels = {c["ChannelName"]: c for c in _job(cloud, run["job"])["InputDataConfig"]}
    champion = channels["champion"]["DataSource"]["S3DataSource"]
    assert champion["S3DataType"] == "S3Prefix"
    assert champion["S3Uri"] == (
        f"s3://{cloud.names['REGISTRY_BUCKET']}/registry/digits/versions/1/estimator.joblib"
    )
    # The arrival window: both rounds' uploads, newest first.
    body = json.loads(
        cloud.client("s3")
        .get_object(
            Bucket=cloud.names["DATA_BUCKET"],
            Key=f"training/digits/{run['run_id']}/manifest.json",
        )["Body"]
        .read()
    )
    assert len(body) - 1 == 45
