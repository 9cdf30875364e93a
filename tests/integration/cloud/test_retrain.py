"""The retrain handler against moto: real S3 notifications through a real SQS queue."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from edgeloop.contract import announcement
from edgeloop.contract.stages import BANDS
from edgeloop.delta import PatchSpec, apply_checked
from functions.common.registry import Registry
from functions.common.wiring import publisher, rollouts
from functions.evaluate_rollouts import handler as evaluate_rollouts
from functions.retrain import handler as retrain
from functions.retrain.wiring import retrain_service
from functions.rollback import handler as rollback
from functions.rollback.logic import RollbackRefused
from tests.factories import planted_outliers
from tests.support_aws import (
    NAMED_CANARIES,
    FakeLambdaContext,
    LocalCloud,
    digit_batches,
    npz_bytes,
    registry_of,
    report_heartbeat,
    upload_round,
)


def test_fifty_uploads_for_one_model_trigger_exactly_one_run(cloud: LocalCloud) -> None:
    event = upload_round(cloud, digit_batches(50, 0, 28), 1)
    assert len(event["Records"]) >= 50
    response = retrain.handler(event, FakeLambdaContext())
    assert response == {"batchItemFailures": []}
    runs = registry_of(cloud).runs("digits")
    assert len(runs) == 1
    assert runs[0]["rows"] == 50 * 28


def once_per_band(cloud: LocalCloud, model: str) -> bool:
    """Every band of `model` was offered exactly one announcement."""
    return all(len(cloud.announcements(announcement(model, b))) == 1 for b in range(BANDS))


def test_a_promoted_model_is_published_signed_and_announced_to_its_first_stages(
    cloud: LocalCloud,
) -> None:
    # pump-7 (a digits device in stage 3 of 1 → 10 → 50 → 100%) has reported before.
    report_heartbeat("pump-7", model="digits", version=None, health="no_model")
    retrain.handler(upload_round(cloud, digit_batches(40, 0, 30), 1), FakeLambdaContext())
    registry = registry_of(cloud)
    assert registry.runs("digits")[0]["decision"] == "promoted"
    assert registry.latest_version("digits") == 1
    s3 = cloud.client("s3")
    bucket = cloud.names["ARTIFACT_BUCKET"]
    raw = s3.get_object(Bucket=bucket, Key="models/digits/1/manifest.json")["Body"].read()
    manifest = cloud.trusted_keys().verify(raw)
    artifact = s3.get_object(Bucket=bucket, Key=manifest.artifact.path)["Body"].read()
    assert len(artifact) == manifest.artifact.size
    latest = json.loads(
        s3.get_object(Bucket=bucket, Key="models/digits/latest.json")["Body"].read()
    )
    assert latest == {"version": 1, "manifest": "models/digits/1/manifest.json"}
    # No named canaries, and no device in stages 1 and 2 yet: skipped. Stage 3
    # (up to 50%) has pump-7, so the rollout waits there.
    assert cloud.band_offers("digits") == dict.fromkeys(range(50), raw)
    for offer in cloud.published:
        assert (offer["retain"], offer["qos"]) == (True, 1)
    rollout = rollouts().get("digits")
    assert rollout is not None
    assert (rollout.stage, rollout.needed) == (3, 1)


def test_a_second_promotion_ships_a_patch_from_the_first(cloud: LocalCloud) -> None:
    retrain.handler(upload_round(cloud, digit_batches(20, 0, 30), 1), FakeLambdaContext())
    retrain.handler(upload_round(cloud, digit_batches(20, 600, 40), 2), FakeLambdaContext())
    s3 = cloud.client("s3")
    bucket = cloud.names["ARTIFACT_BUCKET"]
    raw = s3.get_object(Bucket=bucket, Key="models/digits/2/manifest.json")["Body"].read()
    manifest = cloud.trusted_keys().verify(raw)
    v1 = s3.get_object(Bucket=bucket, Key="models/digits/1/model.tflite")["Body"].read()
    [delta] = manifest.deltas
    assert delta.from_version == 1
    patch = s3.get_object(Bucket=bucket, Key=delta.path)["Body"].read()
    assert delta.size < manifest.artifact.size
    rebuilt = apply_checked(
        v1,
        patch,
        PatchSpec(delta.codec, delta.from_sha256, manifest.artifact.sha256, manifest.artifact.size),
    )
    assert len(rebuilt) == manifest.artifact.size


def test_a_refused_gate_publishes_nothing(cloud: LocalCloud) -> None:
    # Three devices of 15 rows: the held-out rows are one device's 15, too few to judge at all.
    retrain.handler(upload_round(cloud, digit_batches(3, 0, 15), 1), FakeLambdaContext())
    run = registry_of(cloud).runs("digits")[0]
    assert run["decision"] == "refused"
    assert "held-out rows" in run["reason"]
    assert registry_of(cloud).latest_version("digits") == 0
    assert cloud.published == []


def test_racing_retrains_never_claim_the_same_version(cloud: LocalCloud) -> None:
    registry = registry_of(cloud)
    claimed: list[int] = []
    lock = threading.Lock()

    def claim() -> None:
        for _ in range(5):
            version = Registry(
                cloud.client("dynamodb"), cloud.names["REGISTRY_TABLE"]
            ).claim_next_version("digits", {"run_id": "race"})
            with lock:
                claimed.append(version)

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == list(range(1, 21))
    assert registry.latest_version("digits") == 20


def test_a_transient_failure_sends_the_records_back_and_keeps_the_uploads(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = upload_round(cloud, digit_batches(10, 0, 60), 1)
    service = retrain_service()

    def flaky(model: str) -> None:
        raise ConnectionError("network dropped")

    monkeypatch.setattr(service.retrainer, "retrain", flaky)
    response = retrain.handler(event, FakeLambdaContext())
    assert {f["itemIdentifier"] for f in response["batchItemFailures"]} == {
        r["messageId"] for r in event["Records"] if "Records" in json.loads(r["body"])
    }
    assert len(registry_of(cloud).pending_uploads("digits")) == 10
    monkeypatch.undo()
    # Redelivered: the uploads are still pending, so the run happens now.
    assert retrain.handler(event, FakeLambdaContext()) == {"batchItemFailures": []}
    assert registry_of(cloud).runs("digits")[0]["decision"] == "promoted"


def test_rollback_ships_old_weights_as_a_higher_version(cloud: LocalCloud) -> None:
    retrain.handler(upload_round(cloud, digit_batches(20, 0, 30), 1), FakeLambdaContext())
    retrain.handler(upload_round(cloud, digit_batches(20, 600, 40), 2), FakeLambdaContext())
    result = rollback.handler({"model": "digits", "to_version": 1}, FakeLambdaContext())
    assert result == {"rollback_version": 3}
    s3 = cloud.client("s3")
    bucket = cloud.names["ARTIFACT_BUCKET"]
    v1 = cloud.trusted_keys().verify(
        s3.get_object(Bucket=bucket, Key="models/digits/1/manifest.json")["Body"].read()
    )
    v3 = cloud.trusted_keys().verify(
        s3.get_object(Bucket=bucket, Key="models/digits/3/manifest.json")["Body"].read()
    )
    assert v3.version == 3
    assert v3.artifact.sha256 == v1.artifact.sha256
    assert v3.metrics["rollback_of"] == 1.0
    assert cloud.band_offers("digits") == dict.fromkeys(range(BANDS), v3.to_bytes())


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        ({"model": "digits", "to_version": 7}, "digits has no version 7 to roll back to"),
        ({"model": "pumps", "to_version": 1}, "model 'pumps' has no config"),
    ],
)
def test_a_rollback_to_nothing_publishes_nothing(
    cloud: LocalCloud, request_: dict[str, object], reason: str
) -> None:
    retrain.handler(upload_round(cloud, digit_batches(20, 0, 30), 1), FakeLambdaContext())
    published = len(cloud.published)
    with pytest.raises(RollbackRefused, match=reason):
        rollback.handler(request_, FakeLambdaContext())
    assert registry_of(cloud).latest_version("digits") == 1
    assert len(cloud.published) == published


def test_a_failed_announcement_is_made_good_by_the_schedule(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = retrain_service()

    def broker_down(model: str, version: int, manifest: bytes) -> None:
        raise ConnectionError("IoT data plane unreachable")

    monkeypatch.setattr(service.retrainer, "announce", broker_down)
    event = upload_round(cloud, digit_batches(30, 0, 30), 1)
    retrain.handler(event, FakeLambdaContext())
    assert registry_of(cloud).latest_version("digits") == 1
    assert cloud.band_offers("digits") == {}
    evaluate_rollouts.handler({}, FakeLambdaContext())
    offers = cloud.band_offers("digits")
    assert sorted(offers) == list(range(BANDS))  # no device reported yet: every stage skipped
    assert {cloud.trusted_keys().verify(raw).version for raw in offers.values()} == {1}
    evaluate_rollouts.handler({}, FakeLambdaContext())
    assert once_per_band(cloud, "digits")


def test_a_publish_that_fails_after_the_rollout_is_written_is_made_good_by_the_schedule(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rollout is recorded, then the IoT publish fails: the schedule must not take
    the recorded rollout for an announced one."""
    real = publisher().publish
    failures = [ConnectionError("IoT data plane unreachable")]

    def flaky(topic: str, payload: bytes, *, retain: bool = False) -> None:
        if failures:
            raise failures.pop()
        real(topic, payload, retain=retain)

    monkeypatch.setattr(publisher(), "publish", flaky)
    event = upload_round(cloud, digit_batches(30, 0, 30), 1)
    retrain.handler(event, FakeLambdaContext())
    pending = rollouts().get("digits")
    assert pending is not None
    assert pending.publish is not None  # written, not yet carried out
    assert cloud.band_offers("digits") == {}
    evaluate_rollouts.handler({}, FakeLambdaContext())
    offers = cloud.band_offers("digits")
    assert sorted(offers) == list(range(BANDS))
    assert {cloud.trusted_keys().verify(raw).version for raw in offers.values()} == {1}
    assert rollouts().get("digits").publish is None  # type: ignore[union-attr]
    evaluate_rollouts.handler({}, FakeLambdaContext())
    assert once_per_band(cloud, "digits")


def test_losing_the_announcement_race_to_the_schedule_fails_nothing(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retrain reads "no rollout yet", the schedule starts the new champion's rollout
    meanwhile, and the retrain's conditional write loses: that is success, not a
    failed batch (it was an ERROR traceback and a 17 s redelivery in the demo), and
    the version is announced once."""
    service = retrain_service()
    registry = registry_of(cloud)
    lost: list[bool] = []

    class ReadBeforeTheSchedule(Registry):
        """The registry as the retrain saw it: its first read of the rollout came before
        the schedule's write; any later read sees the table as it is."""

        def __init__(self, seen: dict[str, Any] | None) -> None:
            super().__init__(cloud.client("dynamodb"), cloud.names["REGISTRY_TABLE"])
            self.reads = [seen]

        def rollout(self, model: str) -> dict[str, Any] | None:
            return self.reads.pop() if self.reads else super().rollout(model)

    def schedule_wins(model: str, version: int, manifest: bytes) -> bool:
        seen = registry.rollout(model)
        evaluate_rollouts.handler({}, FakeLambdaContext())
        started = replace(rollouts(), registry=ReadBeforeTheSchedule(seen)).start(
            model, version, manifest
        )
        lost.append(not started)
        return started

    monkeypatch.setattr(service.retrainer, "announce", schedule_wins)
    response = retrain.handler(
        upload_round(cloud, digit_batches(30, 0, 30), 1), FakeLambdaContext()
    )
    assert response == {"batchItemFailures": []}
    assert lost == [True]  # the race was run, and lost
    assert once_per_band(cloud, "digits")
    offers = cloud.band_offers("digits")
    assert {cloud.trusted_keys().verify(raw).version for raw in offers.values()} == {1}
    rollout = rollouts().get("digits")
    assert rollout is not None
    assert [e["event"] for e in rollout.history].count("started") == 1


def test_kmeans_data_above_the_stream_threshold_trains_chunk_by_chunk(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above STREAM_ABOVE_BYTES the retrain reads one upload at a time; a bad
    batch is still quarantined and the run still ships a signed model."""
    monkeypatch.setenv("STREAM_ABOVE_BYTES", "1000")
    cloud.new_container()  # which reads the setting
    X, _ = planted_outliers(3000, seed=21)
    for i in range(6):
        cloud.put_batch("vibration", f"pump-{i}", f"0001{i:04d}.npz", npz_bytes(X[i * 500 :][:500]))
    cloud.put_batch("vibration", "pump-9", "00019999.npz", npz_bytes(np.ones((10, 5))))
    response = retrain.handler(cloud.receive_event(7), FakeLambdaContext())
    assert response == {"batchItemFailures": []}
    run = registry_of(cloud).runs("vibration")[0]
    assert run["decision"] == "promoted", run["reason"]
    assert run["rows"] == 3000
    assert [q["reason"] for q in run["quarantined"]] == ["wrong_width"]
    record = json.loads(
        cloud.client("s3")
        .get_object(
            Bucket=cloud.names["REGISTRY_BUCKET"],
            Key=f"registry/vibration/runs/{run['run_id']}.json",
        )["Body"]
        .read()
    )
    assert record["streamed"]["passes"] == 3
    assert len(record["data"]["batches"]) == 6
    offers = cloud.thing_offers(NAMED_CANARIES)
    assert sorted(offers) == sorted(NAMED_CANARIES)
    assert {cloud.trusted_keys().verify(raw).version for raw in offers.values()} == {1}
