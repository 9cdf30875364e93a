"""The pre-provisioning hook: admits what the allow-list admits, as the list says, and
refuses the rest with a reason in its log line."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from edgeloop.contract.provisioning import MODEL, SERIAL, THING_GROUP, HookAnswer, HookEvent
from functions.common.admission import Admission, AdmissionTable, admission_table_spec
from functions.common.cold_start import reset_cold_start
from functions.common.env import ProvisioningHookEnv
from functions.provisioning_hook.logic import RegistryThings, decide
from tests.support_aws import FakeLambdaContext

ENV = ProvisioningHookEnv.model_validate(
    {"ADMISSION_TABLE": "admissions", "CANARY_GROUP": "edgeloop-canary", "FLEET_GROUP": "fleet"}
)


def hook_event(parameters: dict[str, str]) -> dict[str, Any]:
    return HookEvent(
        claim_certificate_id="claim-1",
        certificate_id="cert-1",
        certificate_pem="-----BEGIN CERTIFICATE-----\n...",
        template_arn="arn:aws:iot:eu-west-1:123456789012:provisioningtemplate/edgeloop-fleet",
        client_id="factory-client",
        parameters=parameters,
    ).to_json()


class _Table:
    def __init__(self, entries: dict[str, Admission]) -> None:
        self.entries = entries
        self.asked: list[str] = []

    def lookup(self, serial: str) -> Admission | None:
        self.asked.append(serial)
        return self.entries.get(serial)


def test_an_admitted_serial_gets_its_model_and_the_fleet_or_canary_group() -> None:
    table = _Table(
        {
            "pump-1": Admission("digits", False, "serial pump-1"),
            "pump-2": Admission("digits", True, r"pattern pump-\d"),
        }
    )
    fleet = decide(ENV, table, hook_event({SERIAL: "pump-1"}))
    assert fleet.answer == HookAnswer.admit("digits", "fleet")
    assert fleet.reason == "admitted by serial pump-1"
    canary = decide(ENV, table, hook_event({SERIAL: "pump-2"}))
    assert canary.answer.overrides == {MODEL: "digits", THING_GROUP: "edgeloop-canary"}
    assert canary.reason == r"admitted by pattern pump-\d"


def test_the_devices_own_model_and_group_are_overridden() -> None:
    table = _Table({"pump-1": Admission("digits", False, "serial pump-1")})
    claimed = {SERIAL: "pump-1", MODEL: "vibration", THING_GROUP: "edgeloop-canary"}
    answer = decide(ENV, table, hook_event(claimed)).answer.to_json()
    assert answer == {
        "allowProvisioning": True,
        "parameterOverrides": {MODEL: "digits", THING_GROUP: "fleet"},
    }


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (hook_event({SERIAL: "pump-9"}), "not on the allow-list"),
        (hook_event({SERIAL: "pump 9/../x"}), "invalid serial"),
        (hook_event({}), f"no {SERIAL} parameter"),
        ({"parameters": "nope"}, "not a pre-provisioning hook event"),
        ([], "not a pre-provisioning hook event"),
    ],
)
def test_anything_else_is_refused_with_its_reason(event: Any, reason: str) -> None:
    table = _Table({})
    decision = decide(ENV, table, event)
    assert decision.answer.to_json() == {"allowProvisioning": False}
    assert decision.reason.startswith(reason)
    # An invalid serial is never looked up.
    assert table.asked == (["pump-9"] if reason == "not on the allow-list" else [])


def test_an_entry_whose_model_the_contract_refuses_admits_nobody() -> None:
    table = _Table({"pump-1": Admission("Bad Model", False, "serial pump-1")})
    decision = decide(ENV, table, hook_event({SERIAL: "pump-1"}))
    assert not decision.admitted
    assert "serial pump-1 is unusable" in decision.reason


@pytest.fixture
def admissions(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[AdmissionTable]:
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="eu-west-1")
    name = f"admissions-{uuid.uuid4().hex[:6]}"
    dynamodb.create_table(**admission_table_spec(name))
    for key, value in {
        "ADMISSION_TABLE": name,
        "CANARY_GROUP": "edgeloop-canary",
        "FLEET_GROUP": "edgeloop-fleet-devices",
        "AWS_ENDPOINT_URL": moto_endpoint,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "edgeloop",
    }.items():
        monkeypatch.setenv(key, value)
    reset_cold_start()
    yield AdmissionTable(dynamodb, name)
    reset_cold_start()


def test_the_handler_answers_from_the_table_and_logs_serial_decision_and_reason(
    admissions: AdmissionTable, caplog: pytest.LogCaptureFixture
) -> None:
    from functions.provisioning_hook.handler import handler

    admissions.allow_pattern(r"pump-\d{3}", "vibration", canary=True)
    admitted = handler(hook_event({SERIAL: "pump-123"}), FakeLambdaContext())
    assert admitted == {
        "allowProvisioning": True,
        "parameterOverrides": {MODEL: "vibration", THING_GROUP: "edgeloop-canary"},
    }
    refused = handler(hook_event({SERIAL: "pump-1234"}), FakeLambdaContext())
    assert refused == {"allowProvisioning": False}
    logged = [
        (r.levelname, *(r.__dict__[k] for k in ("serial", "decision", "reason")))
        for r in caplog.records
        if "decision" in r.__dict__
    ]
    assert logged == [
        ("INFO", "pump-123", "admit", r"admitted by pattern pump-\d{3}"),
        ("WARNING", "pump-1234", "refuse", "not on the allow-list"),
    ]


class _Things:
    def __init__(self, provisioned: set[str]) -> None:
        self.provisioned = provisioned

    def has_active_certificate(self, thing: str) -> bool:
        return thing in self.provisioned


def test_an_admitted_serial_whose_thing_holds_an_active_certificate_is_refused() -> None:
    table = _Table({"pump-1": Admission("digits", False, "serial pump-1")})
    taken = decide(ENV, table, hook_event({SERIAL: "pump-1"}), _Things({"pump-1"}))
    assert not taken.admitted
    assert taken.reason.startswith("already provisioned")
    fresh = decide(ENV, table, hook_event({SERIAL: "pump-1"}), _Things(set()))
    assert fresh.admitted


def test_the_registry_says_whether_a_thing_holds_an_active_certificate(
    moto_endpoint: str,
) -> None:
    iot_client = boto3.client("iot", endpoint_url=moto_endpoint, region_name="eu-west-1")
    things = RegistryThings(iot_client)
    thing = f"pump-{uuid.uuid4().hex[:6]}"
    assert not things.has_active_certificate(thing)
    iot_client.create_thing(thingName=thing)
    assert not things.has_active_certificate(thing)
    made = iot_client.create_keys_and_certificate(setAsActive=True)
    iot_client.attach_thing_principal(thingName=thing, principal=made["certificateArn"])
    assert things.has_active_certificate(thing)
    iot_client.update_certificate(certificateId=made["certificateId"], newStatus="INACTIVE")
    assert not things.has_active_certificate(thing)
