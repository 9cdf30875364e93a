"""Cloud boundaries: one device's prefix and topics are not another's; bad uploads are contained.

Cases from the reliability and security issue, numbered as there.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from functions.common.fleet import FleetTable
from functions.presign.logic import policy_conditions
from functions.retrain import handler as retrain
from tests.support_aws import (
    FakeLambdaContext,
    LocalCloud,
    ask_presign,
    digit_batches,
    npz_bytes,
    registry_of,
    report_status,
)


def test_a_device_cannot_obtain_a_url_for_another_devices_prefix(cloud: LocalCloud) -> None:
    """Case 15."""
    answer = ask_presign("pump-7", thing="pump-8", key="data/digits/pump-8/evil.npz")
    assert str(answer["key"]).startswith("data/digits/pump-7/")
    fields = answer["fields"]
    assert isinstance(fields, dict)
    keys = [c["key"] for c in policy_conditions(fields) if isinstance(c, dict) and "key" in c]
    assert keys == [answer["key"]]


def test_oversized_or_malformed_uploads_are_quarantined_and_the_retrain_still_runs(
    cloud: LocalCloud,
) -> None:
    """Case 15 (an oversized request never gets a URL: test_presign's refusals)."""
    good = digit_batches(30, 0, 30)
    bad = [npz_bytes(np.ones((5, 3)), np.ones(5)), b"not an npz file"]
    for i, data in enumerate(good):
        cloud.put_batch("digits", "pump-1", f"{i:08d}.npz", data)
    for i, data in enumerate(bad):
        cloud.put_batch("digits", "pump-2", f"9{i:07d}.npz", data)
    response = retrain.handler(cloud.receive_event(len(good) + len(bad)), FakeLambdaContext())
    assert response == {"batchItemFailures": []}
    run = registry_of(cloud).runs("digits")[0]
    assert run["decision"] == "promoted"
    assert sorted(q["reason"] for q in run["quarantined"]) == ["unreadable", "wrong_width"]
    s3 = cloud.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=cloud.names["DATA_BUCKET"])["Contents"]]
    assert "quarantine/digits/pump-2/90000000.npz" in keys
    reason = json.loads(
        s3.get_object(
            Bucket=cloud.names["DATA_BUCKET"],
            Key="quarantine/digits/pump-2/90000000.npz.reason.json",
        )["Body"].read()
    )
    assert reason["reason"] == "wrong_width"
    assert "data/digits/pump-2/90000000.npz" not in keys


def test_a_status_message_claiming_another_things_name_is_ignored(cloud: LocalCloud) -> None:
    """Case 16, locally."""
    result = report_status("pump-1", thing="pump-2")
    assert result["recorded"] is False
    assert "claims to be from 'pump-2'" in result["reason"]
    assert (
        FleetTable(cloud.client("dynamodb"), cloud.names["FLEET_TABLE"]).for_model("vibration")
        == []
    )


def test_the_iot_policy_refuses_a_device_publishing_on_another_devices_topics(
    synthesized_template: dict[str, Any],
) -> None:
    """Case 16, on the synthesized IoT policy: every thing-scoped resource is pinned to the
    connection's own thing name, and nothing grants a wildcard over things."""
    # The device policy, and the claim certificate's, which names no fleet topic at all.
    policies = [
        r["Properties"]["PolicyDocument"]
        for r in synthesized_template["Resources"].values()
        if r["Type"] == "AWS::IoT::Policy"
    ]
    assert len(policies) == 2
    own = "edgeloop/things/${iot:Connection.Thing.ThingName}/"
    for statement in (s for policy in policies for s in policy["Statement"]):
        resources = (
            statement["Resource"]
            if isinstance(statement["Resource"], list)
            else [statement["Resource"]]
        )
        for resource in resources:
            text = json.dumps(resource)
            if "edgeloop/things/" in text:
                assert own in text, resource
            assert "things/*" not in text, resource
            assert "things/+" not in text, resource


def test_a_huge_finite_value_is_quarantined_at_decode_and_the_retrain_runs(
    cloud: LocalCloud,
) -> None:
    """Finding 1 (#24): features of 1e308 are finite, and standardising them overflowed
    every run of the model. They are past the model's max_abs_value: set aside on reading."""
    for i, data in enumerate(digit_batches(10, 0, 60)):
        cloud.put_batch("digits", "pump-7", f"{i:08d}.npz", data)
    huge = npz_bytes(np.full((50, 64), 1e308), np.zeros(50, dtype=np.int64))
    cloud.put_batch("digits", "pump-8", "90000000.npz", huge)
    response = retrain.handler(cloud.receive_event(11), FakeLambdaContext())
    assert response == {"batchItemFailures": []}
    run = registry_of(cloud).runs("digits")[0]
    assert run["decision"] in ("promoted", "refused"), run
    assert [(q["key"], q["reason"]) for q in run["quarantined"]] == [
        ("data/digits/pump-8/90000000.npz", "out_of_range")
    ]


def test_a_batch_that_breaks_training_is_quarantined_and_the_run_goes_on(
    cloud: LocalCloud,
) -> None:
    """Finding 1 (#24), the second guard: with no bound at decode (a config that
    allows any finite value), the batch that makes the fit raise is found by leaving
    halves out, quarantined with the reason, and the run trains without it."""
    config = cloud.config_dir / "digits.toml"
    config.write_text(config.read_text().replace("[model]", "[model]\nmax_abs_value = 1.7e308", 1))
    cloud.new_container()
    for i, data in enumerate(digit_batches(10, 0, 60)):
        cloud.put_batch("digits", "pump-7", f"{i:08d}.npz", data)
    huge = npz_bytes(np.full((50, 64), 1e308), np.zeros(50, dtype=np.int64))
    cloud.put_batch("digits", "pump-8", "90000000.npz", huge)
    response = retrain.handler(cloud.receive_event(11), FakeLambdaContext())
    assert response == {"batchItemFailures": []}
    run = registry_of(cloud).runs("digits")[0]
    assert run["decision"] in ("promoted", "refused"), run
    assert [(q["key"], q["reason"]) for q in run["quarantined"]] == [
        ("data/digits/pump-8/90000000.npz", "training_failed")
    ]
    assert "the run failed with it (ValueError" in run["quarantined"][0]["detail"]
    s3 = cloud.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=cloud.names["DATA_BUCKET"])["Contents"]]
    assert "quarantine/digits/pump-8/90000000.npz" in keys
    assert registry_of(cloud).pending_uploads("digits") == []
