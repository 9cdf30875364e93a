"""A run handed to SageMaker, as deployed: the packaged retrain function starts the job
with its own role, the job runs the training entry point from the same task tree over
the /opt/ml layout (its channels downloaded with the job role's credentials), and the
packaged completion function ends the run from the job's state-change event."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.datasets import load_digits

from edge.uploads import encode_batch
from functions.common.registry import Registry
from tests.packaged.conftest import Deployed, deploy, digits_batches, object_keys


@pytest.fixture(scope="module")
def handing_off(tmp_path_factory: pytest.TempPathFactory, broker: str) -> Iterator[Deployed]:
    # Every run is above a 1 KiB memory limit: every run leaves the function.
    yield from deploy(
        tmp_path_factory.mktemp("handing-off"), broker, settings={"HANDOFF_MEMORY_BYTES": "1024"}
    )


def _registry(deployed: Deployed) -> Registry:
    return Registry(deployed.client("dynamodb"), deployed.resources.registry_table)


def _retrain(deployed: Deployed, batches: list[bytes]) -> dict[str, object]:
    for i, data in enumerate(batches):
        assert deployed.upload(f"pump-{1 + i % 2}", data) in (200, 201, 204)
    result = deployed.invoke("retrain", deployed.retrain_event(len(batches)))
    assert result["batchItemFailures"] == []
    run: dict[str, object] = _registry(deployed).runs("digits")[0]
    return run


def test_a_run_beyond_the_limit_ships_a_signed_version_through_a_training_job(
    handing_off: Deployed,
) -> None:
    handed = _retrain(handing_off, digits_batches(6))
    assert handed["decision"] == "training_elsewhere"
    assert _registry(handing_off).champion("digits") is None

    (answer,) = handing_off.stack.finish_training_jobs()
    assert answer == {"job": handed["job"], "ended": True, "decision": "promoted", "version": 1}
    registry = _registry(handing_off)
    run = registry.runs("digits")[0]
    assert (run["run_id"], run["decision"], run["version"]) == (handed["run_id"], "promoted", 1)
    assert registry.champion("digits") is not None
    targets = object_keys(handing_off, handing_off.resources.artifact_bucket, "models/tuf/targets/")
    assert any("digits" in key for key in targets)
    assert registry.rollout("digits") is not None  # its rollout started
    assert handing_off.stack.finish_training_jobs() == []  # each job runs once


def test_a_failing_job_records_its_reason_and_publishes_nothing(handing_off: Deployed) -> None:
    registry = _registry(handing_off)
    before = registry.latest_version("digits")
    # Only the new uploads are in the next run's window (the earlier ones expire).
    s3, bucket = handing_off.client("s3"), handing_off.resources.data_bucket
    for key in object_keys(handing_off, bucket, "data/digits/"):
        s3.delete_object(Bucket=bucket, Key=key)
    X, y = load_digits(return_X_y=True)
    wild = [encode_batch(np.full_like(X[:60], 1e12), y[:60]) for _ in range(2)]
    handed = _retrain(handing_off, wild)
    assert handed["decision"] == "training_elsewhere"

    (answer,) = handing_off.stack.finish_training_jobs()
    assert answer == {"job": handed["job"], "ended": True, "decision": "failed", "version": None}
    run = registry.runs("digits")[0]
    assert run["run_id"] == handed["run_id"]
    assert run["decision"] == "failed"
    assert str(run["reason"]).startswith(f"training job {handed['job']} failed: NoUsableData: ")
    assert registry.latest_version("digits") == before
