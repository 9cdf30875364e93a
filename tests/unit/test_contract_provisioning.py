"""The provisioning-by-claim contract against AWS's documented topics and payloads."""

from __future__ import annotations

import json

import pytest

from edgeloop.contract.device_policy import MODEL_ATTRIBUTE, DeviceAction
from edgeloop.contract.provisioning import (
    MODEL,
    SERIAL,
    THING_GROUP,
    CallRejected,
    CertificateIssued,
    HookAnswer,
    HookEvent,
    ProvisioningRefused,
    RegisterRequest,
    ThingRegistered,
    check_template_name,
    claim_grants,
    create_from_csr,
    csr_request,
    parse_csr_request,
    provisioning_template,
    register_thing,
    template_name,
)


def test_topics_are_the_documented_ones() -> None:
    csr = create_from_csr()
    assert csr.request == "$aws/certificates/create-from-csr/json"
    assert csr.accepted == "$aws/certificates/create-from-csr/json/accepted"
    assert csr.rejected == "$aws/certificates/create-from-csr/json/rejected"
    reg = register_thing("edgeloop-fleet")
    assert reg.request == "$aws/provisioning-templates/edgeloop-fleet/provision/json"
    assert reg.rejected == "$aws/provisioning-templates/edgeloop-fleet/provision/json/rejected"


def test_a_template_name_fits_iots_limit_for_any_stack_name() -> None:
    assert template_name("edgeloop") == "edgeloop-fleet"
    long = "a" * 112
    name = template_name(long)
    assert len(name) <= 36
    check_template_name(name)
    # Two long stacks sharing a prefix still get two templates.
    assert template_name(long) != template_name(long[:-1] + "b")


def test_a_template_name_with_a_slash_is_refused() -> None:
    with pytest.raises(ValueError, match="provisioning template name"):
        register_thing("a/b")


def test_the_claim_may_only_make_the_two_calls_and_hear_their_answers() -> None:
    grants = {g.action: g.names for g in claim_grants("t")}
    assert set(grants[DeviceAction.PUBLISH]) == {
        "$aws/certificates/create-from-csr/json",
        "$aws/provisioning-templates/t/provision/json",
    }
    assert grants[DeviceAction.SUBSCRIBE] == grants[DeviceAction.RECEIVE]
    assert all(n.endswith(("/accepted", "/rejected")) for n in grants[DeviceAction.RECEIVE])
    assert not any("edgeloop/" in n for names in grants.values() for n in names)


def test_the_payloads_round_trip_with_awss_field_names() -> None:
    assert json.loads(csr_request("PEM")) == {"certificateSigningRequest": "PEM"}
    assert parse_csr_request(csr_request("PEM")) == "PEM"
    issued = CertificateIssued("id", "PEM", "token")
    assert set(json.loads(issued.to_bytes())) == {
        "certificateId",
        "certificatePem",
        "certificateOwnershipToken",
    }
    assert CertificateIssued.from_bytes(issued.to_bytes()) == issued
    request = RegisterRequest("token", {SERIAL: "sn-1"})
    assert json.loads(request.to_bytes()) == {
        "certificateOwnershipToken": "token",
        "parameters": {SERIAL: "sn-1"},
    }
    assert RegisterRequest.from_bytes(request.to_bytes()).serial == "sn-1"
    done = ThingRegistered("sn-1", {})
    assert ThingRegistered.from_bytes(done.to_bytes()) == done
    no = CallRejected(403, "AccessDenied", "refused")
    assert json.loads(no.to_bytes()) == {
        "statusCode": 403,
        "errorCode": "AccessDenied",
        "errorMessage": "refused",
    }
    assert CallRejected.from_bytes(no.to_bytes()) == no


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"certificateOwnershipToken": "t"}', f"parameters.{SERIAL} is missing"),
        (b'{"certificateOwnershipToken": "t", "parameters": {"SerialNumber": "a/b"}}', "not valid"),
        (b'{"certificateOwnershipToken": "t", "parameters": {"SerialNumber": 1}}', "strings"),
    ],
)
def test_a_bad_register_request_is_refused_with_the_field_named(
    payload: bytes, message: str
) -> None:
    with pytest.raises(ProvisioningRefused, match=message):
        RegisterRequest.from_bytes(payload).serial  # noqa: B018


def test_the_hook_speaks_awss_shapes() -> None:
    event = HookEvent("claim", "cert", "PEM", "arn", "client", {SERIAL: "sn-1"})
    assert set(event.to_json()) == {
        "claimCertificateId",
        "certificateId",
        "certificatePem",
        "templateArn",
        "clientId",
        "parameters",
    }
    assert HookEvent.from_json(event.to_json()) == event
    admit = HookAnswer.admit("digits", "fleet")
    assert admit.to_json() == {
        "allowProvisioning": True,
        "parameterOverrides": {MODEL: "digits", THING_GROUP: "fleet"},
    }
    assert HookAnswer.refuse().to_json() == {"allowProvisioning": False}
    assert HookAnswer.from_json(admit.to_json()) == admit
    with pytest.raises(ValueError, match="model name"):
        HookAnswer.admit("Not A Model", "fleet")


def test_the_template_makes_the_thing_its_model_and_an_active_certificate() -> None:
    body = provisioning_template("stack-device")
    resources = body["Resources"]
    thing = resources["thing"]["Properties"]
    assert thing["ThingName"] == {"Ref": SERIAL}
    assert thing["AttributePayload"] == {MODEL_ATTRIBUTE: {"Ref": MODEL}}
    assert resources["certificate"]["Properties"]["Status"] == "Active"
    assert resources["policy"]["Properties"]["PolicyName"] == "stack-device"
    # Every Ref, however deep, names a declared parameter.
    refs: set[str] = set()

    def collect(node: object) -> None:
        if isinstance(node, dict):
            if "Ref" in node:
                refs.add(node["Ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(resources)
    collect(body["DeviceConfiguration"])
    assert refs == set(body["Parameters"])
    # The answer tells the device the model the hook chose.
    assert body["DeviceConfiguration"] == {MODEL_ATTRIBUTE: {"Ref": MODEL}}
