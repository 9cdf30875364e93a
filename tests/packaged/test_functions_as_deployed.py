"""Every function from the task tree it ships in, with the template's environment and role.

A statement the stack does not grant is an AccessDenied here, as it would be in
AWS; an import the lock does not carry is a Runtime.ImportModuleError.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from edgeloop.contract.provisioning import MODEL, SERIAL, THING_GROUP, HookEvent, template_name
from edgeloop.factory.config import RolloutSection
from edgeloop.local.lambda_host import FunctionError
from functions.common.admission import AdmissionTable
from functions.common.fleet import FleetTable
from functions.common.registry import Registry
from functions.common.rollouts import Rollouts
from tests.packaged.conftest import Deployed, deploy, digits_batches, object_keys

SCHEDULED_EVENT = {
    "version": "0",
    "id": "3f0c1a52-1d57-4f0a-9d6b-0f3b4f6a1c11",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2026-12-06T08:00:00Z",
    "region": "eu-west-1",
    "resources": ["arn:aws:events:eu-west-1:123456789012:rule/edgeloop-EveryMinute"],
    "detail": {},
}


def without(action: str, function: str) -> Any:
    """A role edit that drops `action` from `function`'s statements."""

    def edit(name: str, statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if name != function:
            return statements
        kept = []
        for statement in statements:
            actions = statement["Action"]
            actions = [actions] if isinstance(actions, str) else actions
            rest = [a for a in actions if a != action]
            if rest:
                kept.append({**statement, "Action": rest})
        return kept

    return edit


def test_every_function_runs_with_the_environment_the_template_gives_it(
    deployed: Deployed,
) -> None:
    declared = {
        spec.name: set(spec.environment) for spec in deployed.stack.stack.functions().values()
    }
    assert set(declared) == {
        "presign",
        "retrain",
        "status",
        "evaluate_rollouts",
        "rollback",
        "training_done",
        "provisioning_hook",
    }
    for name, function in deployed.stack.functions.items():
        assert declared[name] <= set(function.environment), name
        # The interpreter sees the task tree and the standard library, never a venv.
        assert "VIRTUAL_ENV" not in function.environment
        assert "HOME" not in function.environment


def test_presign_grants_a_sigv4_upload_that_the_data_bucket_accepts(deployed: Deployed) -> None:
    grant = deployed.grant("pump-1")
    fields = {name.lower() for name in grant["fields"]}
    assert {"x-amz-algorithm", "x-amz-credential", "x-amz-signature", "policy"} <= fields
    assert not {"awsaccesskeyid", "signature"} & fields
    assert grant["fields"]["x-amz-credential"].split("/")[2] == "eu-west-1"
    status = deployed.upload("pump-1", digits_batches(1)[0])
    assert status in (200, 201, 204)
    assert any(
        key.startswith("data/digits/pump-1/")
        for key in object_keys(deployed, deployed.resources.data_bucket, "data/")
    )


def test_presign_refuses_a_thing_the_registry_does_not_know(deployed: Deployed) -> None:
    answer = deployed.grant("pump-unknown")
    assert answer["error"]["code"] == "unknown_device"


def test_an_s3_notification_on_the_queue_retrains_and_publishes_a_signed_version(
    deployed: Deployed,
) -> None:
    batches = digits_batches(6)
    for i, data in enumerate(batches):
        assert deployed.upload(f"pump-{1 + i % 2}", data) in (200, 201, 204)
    event = deployed.retrain_event(len(batches))
    result = deployed.invoke("retrain", event)
    assert result["batchItemFailures"] == []
    registry = Registry(deployed.client("dynamodb"), deployed.resources.registry_table)
    assert registry.champion("digits") is not None
    targets = object_keys(deployed, deployed.resources.artifact_bucket, "models/tuf/targets/")
    assert any(key.endswith(".model.tflite") or "digits" in key for key in targets)


def test_a_status_report_by_basic_ingest_is_recorded_for_the_proven_thing(
    deployed: Deployed,
) -> None:
    result = deployed.invoke(
        "status",
        {
            "model": "digits",
            "version": None,
            "health": "healthy",
            "step": "idle",
            "target_version": None,
            "topic_thing": "pump-2",
        },
    )
    assert result["recorded"] is True
    fleet = FleetTable(deployed.client("dynamodb"), deployed.resources.fleet_table)
    assert fleet.get("pump-2") is not None


def test_the_schedule_runs_with_its_own_role(deployed: Deployed) -> None:
    result = deployed.invoke("evaluate_rollouts", SCHEDULED_EVENT)
    assert isinstance(result, dict)


def test_the_operators_rollback_to_a_version_that_never_existed_is_refused(
    deployed: Deployed,
) -> None:
    with pytest.raises(FunctionError) as refused:
        deployed.invoke("rollback", {"model": "digits", "to_version": 99})
    assert "AccessDenied" not in str(refused.value)
    assert "99" in str(refused.value)


@pytest.fixture
def without_put_object(tmp_path: Path, broker: str) -> Iterator[Deployed]:
    yield from deploy(tmp_path, broker, role_edit=without("s3:PutObject", "presign"))


def test_a_grant_signed_by_a_role_without_put_object_is_refused_by_s3(
    without_put_object: Deployed,
) -> None:
    status = without_put_object.upload("pump-1", digits_batches(1)[0])
    assert status == 403


@pytest.fixture
def without_kms_sign(tmp_path: Path, broker: str) -> Iterator[Deployed]:
    yield from deploy(tmp_path, broker, role_edit=without("kms:Sign", "retrain"))


def test_a_retrain_whose_role_may_not_sign_promotes_nothing_and_says_why(
    without_kms_sign: Deployed,
) -> None:
    batches = digits_batches(6)
    for i, data in enumerate(batches):
        without_kms_sign.upload(f"pump-{1 + i % 2}", data)
    result = without_kms_sign.invoke("retrain", without_kms_sign.retrain_event(len(batches)))
    assert result["batchItemFailures"], "the run should hand its records back"
    log = without_kms_sign.stack.functions["retrain"].log_path.read_text()
    assert "AccessDenied" in log or "not authorized" in log
    assert "kms:Sign" in log
    registry = Registry(
        without_kms_sign.client("dynamodb"), without_kms_sign.resources.registry_table
    )
    assert registry.champion("digits") is None


@pytest.fixture
def through_the_data_plane(tmp_path: Path) -> Iterator[Deployed]:
    yield from deploy(tmp_path, None)


@pytest.fixture
def through_the_data_plane_without_publish(tmp_path: Path) -> Iterator[Deployed]:
    yield from deploy(tmp_path, None, role_edit=without("iot:Publish", "presign"))


def test_presign_answers_through_the_iot_data_plane_its_role_allows(
    through_the_data_plane: Deployed,
) -> None:
    assert "url" in through_the_data_plane.grant("pump-1")


def test_presign_without_its_publish_statement_cannot_answer(
    through_the_data_plane_without_publish: Deployed,
) -> None:
    with pytest.raises(FunctionError, match=r"not authorized to perform: iotdata:Publish"):
        through_the_data_plane_without_publish.grant("pump-1")


@pytest.fixture
def fresh(tmp_path: Path, broker: str) -> Iterator[Deployed]:
    yield from deploy(tmp_path, broker)


def never_starts(model: str) -> RolloutSection:
    raise AssertionError(f"the operator's abort starts no rollout ({model})")


def test_an_abort_the_schedule_publishes_withdraws_the_versions_files_with_its_own_role(
    fresh: Deployed,
) -> None:
    batches = digits_batches(6)
    for i, data in enumerate(batches):
        fresh.upload(f"pump-{1 + i % 2}", data)
    assert fresh.invoke("retrain", fresh.retrain_event(len(batches)))["batchItemFailures"] == []
    bucket = fresh.resources.artifact_bucket
    assert object_keys(fresh, bucket, "models/tuf/targets/digits/1/")
    # The operator's abort, as `edgeloop rollout abort` writes it: the decision only.
    operator = Rollouts(
        registry=Registry(fresh.client("dynamodb"), fresh.resources.registry_table),
        fleet=FleetTable(fresh.client("dynamodb"), fresh.resources.fleet_table),
        publisher=None,
        trust=None,
        canaries=lambda model: [],
        settings=never_starts,
    )
    assert operator.abort("digits").state == "aborted"
    # The schedule publishes it: the pointer moves back, and v1's files leave the bucket.
    fresh.invoke("evaluate_rollouts", SCHEDULED_EVENT)
    assert object_keys(fresh, bucket, "models/tuf/targets/digits/1/") == []


def test_the_provisioning_hook_admits_an_allowed_serial_and_refuses_another(
    deployed: Deployed,
) -> None:
    """As IoT Core calls it for a RegisterThing: the allow-list is read with the hook's
    own role, which may not write it."""
    resources = deployed.resources
    assert resources.provisioning_template == template_name(deployed.stack.template.stack_name)
    assert resources.claim_policy.endswith("-claim")
    assert resources.fleet_group.endswith("-fleet-devices")
    admissions = AdmissionTable(deployed.client("dynamodb"), resources.admission_table)
    admissions.allow("sensor-0001", "digits")
    admissions.allow_pattern(r"sensor-9\d{3}", "vibration", canary=True)

    def register(serial: str) -> dict[str, Any]:
        event = HookEvent(
            claim_certificate_id="claim",
            certificate_id="c0ffee",
            certificate_pem="-----BEGIN CERTIFICATE-----",
            template_arn=f"arn:aws:iot:eu-west-1:123456789012:provisioningtemplate/"
            f"{resources.provisioning_template}",
            client_id="factory",
            parameters={SERIAL: serial},
        )
        answer: dict[str, Any] = deployed.invoke("provisioning_hook", event.to_json())
        return answer

    assert register("sensor-0001") == {
        "allowProvisioning": True,
        "parameterOverrides": {MODEL: "digits", THING_GROUP: resources.fleet_group},
    }
    assert register("sensor-9001") == {
        "allowProvisioning": True,
        "parameterOverrides": {MODEL: "vibration", THING_GROUP: resources.canary_group},
    }
    assert register("sensor-0002") == {"allowProvisioning": False}
    as_hook = deployed.client("dynamodb", as_function="provisioning_hook")
    with pytest.raises(ClientError, match="AccessDenied"):
        as_hook.put_item(
            TableName=resources.admission_table,
            Item={"serial": {"S": "sensor-0002"}, "model": {"S": "digits"}},
        )
