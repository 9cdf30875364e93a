"""The retrain handler against moto: real S3 notifications through a real SQS queue."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.targets import InstalledModel
from edgeloop.contract import Manifest, announcement, parse_manifest, sha256_hex
from edgeloop.contract.stages import BANDS
from edgeloop.contract.trust_targets import RolloutPointer, VersionSpec
from edgeloop.delta import PatchSpec, apply_checked
from functions.common.registry import Registry
from functions.common.releases import version_key
from functions.common.wiring import publisher, rollouts
from functions.evaluate_rollouts import handler as evaluate_rollouts
from functions.retrain import handler as retrain
from functions.retrain.wiring import retrain_service
from functions.rollback import handler as rollback
from functions.rollback.logic import RollbackRefused
from tests.factories import digits_toml, planted_outliers
from tests.support_aws import (
    NAMED_CANARIES,
    FakeLambdaContext,
    LocalCloud,
    digit_batches,
    npz_bytes,
    nudge,
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
    cloud: LocalCloud, tmp_path: Path
) -> None:
    # pump-7 (a digits device in stage 3 of 1 → 10 → 50 → 100%) has reported before.
    report_heartbeat("pump-7", model="digits", version=None, health="no_model")
    retrain.handler(upload_round(cloud, digit_batches(40, 0, 30), 1), FakeLambdaContext())
    registry = registry_of(cloud)
    assert registry.runs("digits")[0]["decision"] == "promoted"
    assert registry.latest_version("digits") == 1
    # What a device of stage 3 verifies from its shipped root: v1, signed, fetchable.
    offer, device = cloud.offer("digits", "pump-7", tmp_path)
    assert offer.version == 1
    assert offer.model is not None
    assert offer.spec is not None
    assert offer.golden is not None
    assert len(device.download(offer.model)) == offer.model.length
    assert VersionSpec.from_bytes(device.download(offer.spec)).version == 1
    # No named canaries, and no device in stages 1 and 2 yet: skipped. Stage 3
    # (up to 50%) has pump-7, so the rollout waits there, and only its bands are nudged.
    assert cloud.pointer("digits") == RolloutPointer("digits", 1, None, 50)
    assert cloud.band_offers("digits") == dict.fromkeys(range(50), nudge("digits", 1))
    for offered in cloud.published:
        assert (offered["retain"], offered["qos"]) == (True, 1)
    rollout = rollouts().get("digits")
    assert rollout is not None
    assert (rollout.stage, rollout.needed) == (3, 1)
    # Nothing but the TUF repository is published where devices read.
    keys = cloud.client("s3").list_objects_v2(Bucket=cloud.names["ARTIFACT_BUCKET"])["Contents"]
    assert all(k["Key"].startswith("models/tuf/") for k in keys)


def test_a_version_under_its_collect_goal_asks_its_devices_in_its_signed_spec(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    goal = "\n[collect]\ngoal = 0.999\nsample_rate = 0.4\n"
    (cloud.config_dir / "digits.toml").write_text(digits_toml(0.9, 0.0) + goal)
    report_heartbeat("pump-7", model="digits", version=None, health="no_model")
    retrain.handler(upload_round(cloud, digit_batches(40, 0, 30), 1), FakeLambdaContext())
    offer, device = cloud.offer("digits", "pump-7", tmp_path)
    assert offer.version == 1
    assert offer.spec is not None
    spec = VersionSpec.from_bytes(device.download(offer.spec))
    assert spec.metrics["accuracy"] < 0.999
    assert spec.upload_sample_rate == 0.4


def test_a_second_promotion_ships_a_patch_from_the_first(cloud: LocalCloud, tmp_path: Path) -> None:
    retrain.handler(upload_round(cloud, digit_batches(20, 0, 30), 1), FakeLambdaContext())
    retrain.handler(upload_round(cloud, digit_batches(20, 600, 40), 2), FakeLambdaContext())
    v1 = (
        cloud.client("s3")
        .get_object(
            Bucket=cloud.names["REGISTRY_BUCKET"], Key=version_key("digits", 1, "model.tflite")
        )["Body"]
        .read()
    )
    offer, device = cloud.offer("digits", "pump-7", tmp_path, InstalledModel(1, sha256_hex(v1)))
    assert offer.version == 2
    assert offer.patch is not None
    assert offer.model is not None
    target, info = offer.patch
    assert (info.base_version, info.produces) == (1, offer.model.path)
    assert target.length < offer.model.length
    rebuilt = apply_checked(
        v1,
        device.download(target),
        PatchSpec(info.codec, info.base_sha256, offer.model.hashes["sha256"], offer.model.length),
    )
    assert len(rebuilt) == offer.model.length


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

    # Only the retrain is patched, and only for the first delivery (the fixture's
    # environment, also set through monkeypatch, stays).
    with monkeypatch.context() as patched:
        patched.setattr(service.retrainer, "retrain", flaky)
        response = retrain.handler(event, FakeLambdaContext())
    assert {f["itemIdentifier"] for f in response["batchItemFailures"]} == {
        r["messageId"] for r in event["Records"] if "Records" in json.loads(r["body"])
    }
    assert len(registry_of(cloud).pending_uploads("digits")) == 10
    # Redelivered: the uploads are still pending, so the run happens now.
    assert retrain.handler(event, FakeLambdaContext()) == {"batchItemFailures": []}
    assert registry_of(cloud).runs("digits")[0]["decision"] == "promoted"


def test_rollback_ships_old_weights_as_a_higher_version(cloud: LocalCloud) -> None:
    retrain.handler(upload_round(cloud, digit_batches(20, 0, 30), 1), FakeLambdaContext())
    retrain.handler(upload_round(cloud, digit_batches(20, 600, 40), 2), FakeLambdaContext())
    result = rollback.handler({"model": "digits", "to_version": 1}, FakeLambdaContext())
    assert result == {"rollback_version": 3}
    s3 = cloud.client("s3")
    bucket = cloud.names["REGISTRY_BUCKET"]

    def kept(version: int) -> Manifest:
        key = version_key("digits", version, "manifest.json")
        return parse_manifest(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    v1, v3 = kept(1), kept(3)
    assert v3.version == 3
    assert v3.artifact.sha256 == v1.artifact.sha256
    assert v3.metrics["rollback_of"] == 1.0
    role = cloud.trust().model_role("digits")
    assert role is not None
    assert role.targets[v3.artifact.path].hashes["sha256"] == v1.artifact.sha256
    assert cloud.band_offers("digits") == dict.fromkeys(range(BANDS), nudge("digits", 3))
    assert cloud.pointer("digits") == RolloutPointer("digits", 3, None, 100)


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

    def broker_down(model: str, version: int) -> None:
        raise ConnectionError("IoT data plane unreachable")

    monkeypatch.setattr(service.retrainer, "announce", broker_down)
    event = upload_round(cloud, digit_batches(30, 0, 30), 1)
    retrain.handler(event, FakeLambdaContext())
    assert registry_of(cloud).latest_version("digits") == 1
    assert cloud.band_offers("digits") == {}
    evaluate_rollouts.handler({}, FakeLambdaContext())
    offers = cloud.band_offers("digits")
    assert sorted(offers) == list(range(BANDS))  # no device reported yet: every stage skipped
    assert set(offers.values()) == {nudge("digits", 1)}
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
    assert set(offers.values()) == {nudge("digits", 1)}
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

    def schedule_wins(model: str, version: int) -> bool:
        seen = registry.rollout(model)
        evaluate_rollouts.handler({}, FakeLambdaContext())
        started = replace(rollouts(), registry=ReadBeforeTheSchedule(seen)).start(model, version)
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
    assert set(offers.values()) == {nudge("digits", 1)}
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
    assert set(offers.values()) == {nudge("vibration", 1)}


def test_classifier_data_above_the_stream_threshold_trains_chunk_by_chunk(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A classifier streams too: rows and labels read one upload at a time, the scaler
    from a first pass, then partial_fit; the candidate is gated and its export checked."""
    monkeypatch.setenv("STREAM_ABOVE_BYTES", "1000")
    cloud.new_container()  # which reads the setting
    response = retrain.handler(
        upload_round(cloud, digit_batches(12, 0, 140), 1), FakeLambdaContext()
    )
    assert response == {"batchItemFailures": []}
    run = registry_of(cloud).runs("digits")[0]
    assert run["rows"] == 12 * 140
    record = json.loads(
        cloud.client("s3")
        .get_object(
            Bucket=cloud.names["REGISTRY_BUCKET"],
            Key=f"registry/digits/runs/{run['run_id']}.json",
        )["Body"]
        .read()
    )
    assert record["streamed"]["rows"] == 12 * 140
    assert record["streamed"]["passes"] >= 3
    assert record["start"].startswith("cold start (streamed)")
    assert record["export"]["check"]["ok"]
    assert len(record["data"]["batches"]) == 12
