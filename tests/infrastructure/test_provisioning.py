"""Provisioning by claim in the synthesized template: the template is the contract's, its
hook reads only the allow-list and only IoT Core for this account's template may call it,
and the claim certificate may do nothing but provision."""

from __future__ import annotations

import json
from typing import Any

from edgeloop.contract.provisioning import (
    claim_grants,
    create_from_csr,
    provisioning_template,
    register_thing,
    template_name,
)
from infra.constructs.iot_wiring import device_policy_document, policy_document

STACK = "edgeloop"
ARN = "arn:aws:iot:eu-west-1:123456789012"
IOT = "arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>"


def _of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _only(template: dict[str, Any], kind: str, fragment: str = "") -> tuple[str, dict[str, Any]]:
    [found] = [(k, v) for k, v in _of_type(template, kind).items() if fragment in k]
    return found


def _text(value: Any) -> str:
    """A template value as text, `Fn::Join` flattened and pseudo parameters named."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return json.dumps([_text(v) for v in value])
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_text(p) for p in parts)
    if "Ref" in value and str(value["Ref"]).startswith("AWS::"):
        return f"<{value['Ref']}>"
    return json.dumps(value)


def _hook(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return _only(template, "AWS::Lambda::Function", "ProvisioningHook")


def test_the_provisioning_template_is_the_contracts_with_the_hook_wired(
    synthesized_template: dict[str, Any],
) -> None:
    _, resource = _only(synthesized_template, "AWS::IoT::ProvisioningTemplate")
    props = resource["Properties"]
    assert props["TemplateName"] == template_name(STACK) == "edgeloop-fleet"
    assert props["Enabled"] is True
    assert json.loads(props["TemplateBody"]) == provisioning_template(f"{STACK}-device")
    hook_id, _ = _hook(synthesized_template)
    assert props["PreProvisioningHook"] == {
        "PayloadVersion": "2020-04-01",
        "TargetArn": {"Fn::GetAtt": [hook_id, "Arn"]},
    }
    # The device policy the template attaches is the stack's.
    [device] = [
        p["Properties"]["PolicyName"]
        for p in _of_type(synthesized_template, "AWS::IoT::Policy").values()
        if p["Properties"]["PolicyName"].endswith("-device")
    ]
    assert device == f"{STACK}-device"


def test_the_provisioning_role_is_assumed_by_iot_for_this_account_only(
    synthesized_template: dict[str, Any],
) -> None:
    _, resource = _only(synthesized_template, "AWS::IoT::ProvisioningTemplate")
    role_id = resource["Properties"]["ProvisioningRoleArn"]["Fn::GetAtt"][0]
    role = synthesized_template["Resources"][role_id]["Properties"]
    [statement] = role["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "iot.amazonaws.com"}
    assert statement["Condition"] == {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    }
    assert [_text(a) for a in role["ManagedPolicyArns"]] == [
        "arn:<AWS::Partition>:iam::aws:policy/service-role/AWSIoTThingsRegistration"
    ]


IOT_ARN = "arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>"
THING_ARNS = f"{IOT_ARN}:thing/*"
CERT_ARNS = f"{IOT_ARN}:cert/*"


def test_the_hook_may_only_get_items_from_the_admission_table(
    synthesized_template: dict[str, Any],
) -> None:
    _, hook = _hook(synthesized_template)
    table_id, _ = _only(synthesized_template, "AWS::DynamoDB::GlobalTable", "Admissions")
    role_id = hook["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = [
        s
        for p in _of_type(synthesized_template, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    granted = {
        (action, _text(s["Resource"]))
        for s in statements
        for action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    assert granted == {
        ("xray:PutTraceSegments", "*"),
        ("xray:PutTelemetryRecords", "*"),
        ("dynamodb:GetItem", json.dumps({"Fn::GetAtt": [table_id, "Arn"]})),
        # Whether the serial's thing already holds an active certificate: nothing more.
        ("iot:ListThingPrincipals", THING_ARNS),
        ("iot:DescribeCertificate", CERT_ARNS),
    }
    env = hook["Properties"]["Environment"]["Variables"]
    assert env["ADMISSION_TABLE"] == {"Ref": table_id}
    assert env["CANARY_GROUP"] == "edgeloop-canary"
    assert env["FLEET_GROUP"] == "edgeloop-fleet-devices"
    # IoT Core gives up on a hook after 5 seconds.
    assert hook["Properties"]["Timeout"] <= 5


def test_only_iot_core_for_this_accounts_template_may_invoke_the_hook(
    synthesized_template: dict[str, Any],
) -> None:
    hook_id, _ = _hook(synthesized_template)
    [permission] = [
        p["Properties"]
        for p in _of_type(synthesized_template, "AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Fn::GetAtt": [hook_id, "Arn"]}
    ]
    assert permission["Principal"] == "iot.amazonaws.com"
    assert permission["SourceAccount"] == {"Ref": "AWS::AccountId"}
    assert _text(permission["SourceArn"]) == f"{IOT}:provisioningtemplate/edgeloop-fleet"


def test_the_admission_table_is_durable_like_the_others(
    synthesized_template: dict[str, Any],
) -> None:
    _, table = _only(synthesized_template, "AWS::DynamoDB::GlobalTable", "Admissions")
    props = table["Properties"]
    assert props["KeySchema"] == [{"AttributeName": "serial", "KeyType": "HASH"}]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    [replica] = props["Replicas"]
    assert replica["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["DeletionPolicy"] == "Retain"
    _, fleet = _only(synthesized_template, "AWS::DynamoDB::GlobalTable", "Fleet")
    assert props.get("SSESpecification") == fleet["Properties"].get("SSESpecification")


def test_the_claim_policy_allows_the_provisioning_topics_and_nothing_else(
    synthesized_template: dict[str, Any],
) -> None:
    [claim] = [
        p["Properties"]
        for p in _of_type(synthesized_template, "AWS::IoT::Policy").values()
        if p["Properties"]["PolicyName"] == f"{STACK}-claim"
    ]
    granted = {
        (s["Action"], _text(r).removeprefix(f"{IOT}:"))
        for s in claim["PolicyDocument"]["Statement"]
        for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
    }
    csr, register = create_from_csr(), register_thing("edgeloop-fleet")
    answers = {csr.accepted, csr.rejected, register.accepted, register.rejected}
    assert granted == {
        ("iot:Connect", "client/*"),
        ("iot:Publish", f"topic/{csr.request}"),
        ("iot:Publish", f"topic/{register.request}"),
        *(("iot:Subscribe", f"topicfilter/{a}") for a in answers),
        *(("iot:Receive", f"topic/{a}") for a in answers),
    }
    assert "edgeloop/" not in json.dumps(claim)  # no fleet topic, no rule


def test_the_claim_and_device_policies_share_one_renderer() -> None:
    from edgeloop.contract.device_policy import device_grants
    from edgeloop.contract.topics import RuleNames

    rules = RuleNames(STACK)
    args = ("aws", "eu-west-1", "123456789012")
    assert device_policy_document(*args, rules) == policy_document(*args, device_grants(rules))
    claim: dict[str, Any] = policy_document(*args, claim_grants("edgeloop-fleet"))
    assert claim["Statement"][0] == {
        "Effect": "Allow",
        "Action": "iot:Connect",
        "Resource": f"{ARN}:client/*",
    }
