"""Faults on the cloud side: redelivered, concurrent and poison notifications; aborted rollouts.

Cases from the reliability and security issue, numbered as there.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from edgeloop.contract.trust_targets import RolloutPointer
from edgeloop.local.router import sqs_event
from functions.common.wiring import rollouts
from functions.retrain import handler as retrain
from functions.retrain.wiring import retrain_service
from tests.support_aws import (
    NAMED_CANARIES,
    FakeLambdaContext,
    LocalCloud,
    deliver_counted,
    digit_batches,
    nudge,
    registry_of,
    report_status,
    start_test_rollout,
    upload_round,
)


def test_an_aborted_rollout_leaves_devices_not_yet_updated_where_they_are(
    cloud: LocalCloud,
) -> None:
    """Case 13 (and case 10's second half: rolled_back reports count as failures)."""
    registry = start_test_rollout(cloud, previous=True)
    assert cloud.thing_offers(NAMED_CANARIES) == dict.fromkeys(
        NAMED_CANARIES, nudge("vibration", 2)
    )
    report_status("pump-1")
    # One failure in two reports: under the stage's minimum of three, no verdict yet.
    report_status("pump-2", version=1, step="failed", target_version=2, health="degraded")
    assert deliver_counted(cloud) == {}
    # Two: over the share of outcomes, but not yet 34% of the stage's six devices.
    report_status("pump-3", version=1, step="rolled_back", target_version=2)
    assert deliver_counted(cloud) == {}
    report_status("pump-4", version=1, step="failed", target_version=2)
    assert deliver_counted(cloud) == {"vibration": "aborted"}
    rollout = rollouts().get("vibration")
    assert rollout is not None
    assert (rollout.state, rollout.stage) == ("aborted", 0)
    assert "3 of 4 devices failed to install v2" in rollout.reason
    assert registry.stage_counts("vibration", 2, 0) == {"installed": 1, "failed": 3}
    assert cloud.band_offers("vibration") == {}  # v2 never went past the named canaries
    # The pointer is back on v1 for everyone, and v2's targets left the signed role.
    assert cloud.pointer("vibration") == RolloutPointer("vibration", 1, None, 100)
    role = cloud.trust().model_role("vibration")
    assert role is not None
    assert not [p for p in role.targets if p.startswith("vibration/2/")]
    # Canary devices not yet updated are offered what everyone else runs again.
    assert cloud.thing_offers(NAMED_CANARIES) == dict.fromkeys(
        NAMED_CANARIES, nudge("vibration", 1)
    )
    # An aborted rollout is final: later installs neither count nor revive it.
    assert report_status("pump-5")["counted"] is False
    assert report_status("pump-6")["counted"] is False
    assert registry.stage_counts("vibration", 2, 0) == {"installed": 1, "failed": 3}
    assert rollouts().get("vibration").state == "aborted"  # type: ignore[union-attr]
    assert cloud.band_offers("vibration") == {}


def test_a_duplicate_s3_notification_is_a_no_op(cloud: LocalCloud) -> None:
    """Case 14."""
    event = upload_round(cloud, digit_batches(30, 0, 30), 1)
    retrain.handler(event, FakeLambdaContext())
    published_before = len(cloud.published)
    registry = registry_of(cloud)
    runs_before = registry.runs("digits")
    assert registry.latest_version("digits") == 1
    assert retrain.handler(event, FakeLambdaContext()) == {"batchItemFailures": []}
    assert registry.latest_version("digits") == 1
    assert registry.runs("digits") == runs_before
    assert len(cloud.published) == published_before


def test_a_poison_record_fails_alone_while_its_batch_mates_succeed(cloud: LocalCloud) -> None:
    """Case 14."""
    event = upload_round(cloud, digit_batches(10, 0, 30), 1)
    poison = dict(event["Records"][0], messageId="poison-1", body="{not json")
    foreign = dict(
        event["Records"][0],
        messageId="poison-2",
        body=json.dumps(
            {
                "Records": [
                    {
                        "eventName": "ObjectCreated:Put",
                        "s3": {
                            "bucket": {"name": "x"},
                            "object": {"key": "elsewhere/file.npz", "size": 1, "eTag": "e"},
                        },
                    }
                ]
            }
        ),
    )
    event["Records"] = [poison, *event["Records"], foreign]
    response = retrain.handler(event, FakeLambdaContext())
    assert response == {
        "batchItemFailures": [{"itemIdentifier": "poison-1"}, {"itemIdentifier": "poison-2"}]
    }
    assert registry_of(cloud).runs("digits")[0]["rows"] == 300


def test_a_concurrent_duplicate_is_held_off_until_the_first_finishes(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case 14: the same notification in flight twice registers its upload once."""
    event = upload_round(cloud, digit_batches(1, 0, 30), 1)
    service = retrain_service()
    original = service.retrainer.register
    entered, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow_register(upload: Any) -> dict[str, Any]:
        calls.append(upload.key)
        entered.set()
        release.wait(10)
        return original(upload)

    monkeypatch.setattr(service.retrainer, "register", slow_register)
    first: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: first.update(retrain.handler(event, FakeLambdaContext()))
    )
    worker.start()
    assert entered.wait(10)
    second = retrain.handler(event, FakeLambdaContext())
    upload_ids = {r["messageId"] for r in event["Records"] if "Records" in json.loads(r["body"])}
    assert {f["itemIdentifier"] for f in second["batchItemFailures"]} == upload_ids
    release.set()
    worker.join(30)
    assert first == {"batchItemFailures": []}
    assert len(calls) == 1
    assert len(registry_of(cloud).runs("digits")) == 1


def test_a_poison_record_ends_in_the_dead_letter_queue(cloud: LocalCloud) -> None:
    """Case 14: redelivered until maxReceiveCount, then SQS moves it to the DLQ."""
    sqs = cloud.client("sqs")
    url = cloud.names["QUEUE_URL"]
    sqs.send_message(QueueUrl=url, MessageBody="{this is not an S3 event")
    for i, data in enumerate(digit_batches(3, 0, 30)):
        cloud.put_batch("digits", "pump-1", f"{i:08d}.npz", data)
    handled = 0
    for _ in range(20):
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])
        messages = response.get("Messages", [])
        if not messages:
            break
        event = sqs_event(messages, "arn:aws:sqs:eu-west-1:123456789012:uploads")
        failed = {
            f["itemIdentifier"]
            for f in retrain.handler(event, FakeLambdaContext())["batchItemFailures"]
        }
        handled += 1
        for m in messages:
            if m["MessageId"] in failed:
                sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
                )
            else:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    dead_url = sqs.get_queue_url(
        QueueName=cloud.names["QUEUE_URL"].rsplit("/", 1)[1].replace("-uploads-", "-uploads-dlq-")
    )["QueueUrl"]
    dead = sqs.receive_message(QueueUrl=dead_url, MaxNumberOfMessages=10).get("Messages", [])
    assert [m["Body"] for m in dead] == ["{this is not an S3 event"]
    runs = registry_of(cloud).runs("digits")
    assert len(runs) == 1
    assert runs[0]["rows"] == 90
    assert handled >= 5
