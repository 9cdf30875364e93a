"""Provisioning by claim: AWS IoT fleet provisioning's MQTT API, its hook and its template.

A device leaves the factory with a claim certificate shared by many devices, and
its own serial. It makes its own key, sends a CSR on `CreateCertificateFromCsr`,
and calls `RegisterThing` with the certificate's ownership token and its serial.
The cloud's pre-provisioning hook admits the serial or refuses it, and names the
model (and the thing group: the fleet's or the named canaries'). The provisioning
template then creates the thing, attaches the device policy to the new
certificate and activates it. From then on the device connects as that thing
with its own key, which never left it.

Topics and payloads are AWS's documented ones (JSON payload format):
- https://docs.aws.amazon.com/iot/latest/developerguide/fleet-provision-api.html
- https://docs.aws.amazon.com/iot/latest/developerguide/pre-provisioning-hook.html
- https://docs.aws.amazon.com/iot/latest/developerguide/provision-template.html

The template below is the one source for both the stack's `CfnProvisioningTemplate`
and the local cloud, which applies it to its thing registry itself. It uses only
`Ref`, so that applying it locally needs no template engine.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from edgeloop.contract.device_policy import MODEL_ATTRIBUTE, DeviceAction, DeviceGrant
from edgeloop.contract.reader import Fields
from edgeloop.contract.topics import check_model_name, check_thing_name

PAYLOAD_FORMAT = "json"
CREATE_FROM_CSR = f"$aws/certificates/create-from-csr/{PAYLOAD_FORMAT}"

# The template's parameters. The device sends SERIAL; the hook sets MODEL and
# THING_GROUP (the device's own say in them is overridden, never trusted).
SERIAL = "SerialNumber"
MODEL = "Model"
THING_GROUP = "ThingGroup"
CERTIFICATE_ID = "AWS::IoT::Certificate::Id"
# The resources' logical names in the template.
THING_RESOURCE = "thing"
CERTIFICATE_RESOURCE = "certificate"
POLICY_RESOURCE = "policy"

# IoT's limit on provisioning template names, and what they may hold.
_TEMPLATE_MAX = 36
_TEMPLATE_RE = re.compile(r"^[0-9A-Za-z_-]{1,36}$")


class ProvisioningRefused(ValueError):
    """A provisioning message that is not what AWS's API documents."""


def template_name(stack: str) -> str:
    """The stack's provisioning template's name: `{stack}-fleet`, or, for a stack
    name too long for IoT's 36 characters, a prefix of it and a hash of the whole."""
    name = f"{stack}-fleet"
    if len(name) <= _TEMPLATE_MAX:
        return name
    digest = hashlib.sha256(stack.encode()).hexdigest()[:8]
    return f"{stack[: _TEMPLATE_MAX - len(digest) - 7]}-{digest}-fleet"


def check_template_name(name: str) -> str:
    if not _TEMPLATE_RE.fullmatch(name):
        raise ValueError(
            f"provisioning template name {name!r} is not valid: use 1-36 characters "
            "from letters, digits, '_' and '-'"
        )
    return name


@dataclass(frozen=True)
class ApiTopics:
    """The request topic of one provisioning call and the two its answer comes on."""

    request: str

    @property
    def accepted(self) -> str:
        return f"{self.request}/accepted"

    @property
    def rejected(self) -> str:
        return f"{self.request}/rejected"


def create_from_csr() -> ApiTopics:
    return ApiTopics(CREATE_FROM_CSR)


def register_thing(template: str) -> ApiTopics:
    check_template_name(template)
    return ApiTopics(f"$aws/provisioning-templates/{template}/provision/{PAYLOAD_FORMAT}")


def claim_grants(template: str) -> tuple[DeviceGrant, ...]:
    """What a claim certificate may do: the two provisioning calls, and nothing else.

    Any client id: the claim is shared by every device of a batch, and the device
    knows no thing name yet. It hears only the answers to the calls it may make.
    """
    calls = (create_from_csr(), register_thing(template))
    requests = tuple(c.request for c in calls)
    answers = tuple(t for c in calls for t in (c.accepted, c.rejected))
    return (
        DeviceGrant(DeviceAction.CONNECT, ("*",)),
        DeviceGrant(DeviceAction.PUBLISH, requests),
        DeviceGrant(DeviceAction.SUBSCRIBE, answers),
        DeviceGrant(DeviceAction.RECEIVE, answers),
    )


def provisioning_template(device_policy: str) -> dict[str, Any]:
    """The fleet provisioning template: a thing named by the serial, with the model
    the hook chose as its `model` attribute, in the thing group the hook chose; the
    new certificate active and holding the device policy. RegisterThing's answer
    tells the device its model (`deviceConfiguration`), so one claim bundle serves
    devices of any model."""
    return {
        "DeviceConfiguration": {MODEL_ATTRIBUTE: {"Ref": MODEL}},
        "Parameters": {
            SERIAL: {"Type": "String"},
            MODEL: {"Type": "String"},
            THING_GROUP: {"Type": "String"},
            CERTIFICATE_ID: {"Type": "String"},
        },
        "Resources": {
            THING_RESOURCE: {
                "Type": "AWS::IoT::Thing",
                "OverrideSettings": {
                    # Re-provisioning a serial (a device that lost its key) keeps
                    # the thing and replaces what the hook decides.
                    "AttributePayload": "MERGE",
                    "ThingGroups": "REPLACE",
                },
                "Properties": {
                    "ThingName": {"Ref": SERIAL},
                    "AttributePayload": {MODEL_ATTRIBUTE: {"Ref": MODEL}},
                    "ThingGroups": [{"Ref": THING_GROUP}],
                },
            },
            CERTIFICATE_RESOURCE: {
                "Type": "AWS::IoT::Certificate",
                "Properties": {"CertificateId": {"Ref": CERTIFICATE_ID}, "Status": "Active"},
            },
            POLICY_RESOURCE: {
                "Type": "AWS::IoT::Policy",
                "Properties": {"PolicyName": device_policy},
            },
        },
    }


def _payload(data: bytes, where: str) -> Fields:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProvisioningRefused(f"{where}: not JSON ({exc})") from exc
    # AWS may add fields to its answers: unknown keys are tolerated there.
    return Fields(doc, where, ProvisioningRefused)


def _dump(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


# --- CreateCertificateFromCsr --------------------------------------------------------


def csr_request(csr_pem: str) -> bytes:
    return _dump({"certificateSigningRequest": csr_pem})


def parse_csr_request(data: bytes) -> str:
    return _payload(data, "CreateCertificateFromCsr request").text(
        "certificateSigningRequest", max_length=16384
    )


@dataclass(frozen=True)
class CertificateIssued:
    certificate_id: str
    certificate_pem: str
    ownership_token: str

    def to_bytes(self) -> bytes:
        return _dump(
            {
                "certificateId": self.certificate_id,
                "certificatePem": self.certificate_pem,
                "certificateOwnershipToken": self.ownership_token,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> CertificateIssued:
        f = _payload(data, "CreateCertificateFromCsr answer")
        return cls(
            certificate_id=f.text("certificateId", max_length=128),
            certificate_pem=f.text("certificatePem", max_length=16384),
            ownership_token=f.text("certificateOwnershipToken", max_length=16384),
        )


# --- RegisterThing -------------------------------------------------------------------


@dataclass(frozen=True)
class RegisterRequest:
    ownership_token: str
    parameters: dict[str, str]

    def to_bytes(self) -> bytes:
        return _dump(
            {"certificateOwnershipToken": self.ownership_token, "parameters": self.parameters}
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> RegisterRequest:
        f = _payload(data, "RegisterThing request")
        raw = f.doc.get("parameters", {})
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            raise f.fail("parameters", "an object of strings")
        return cls(f.text("certificateOwnershipToken", max_length=16384), dict(raw))

    @property
    def serial(self) -> str:
        """The device's serial, which names its thing; refused if it could not."""
        serial = self.parameters.get(SERIAL)
        if serial is None:
            raise ProvisioningRefused(f"RegisterThing request: parameters.{SERIAL} is missing")
        try:
            return check_thing_name(serial)
        except ValueError as exc:
            raise ProvisioningRefused(f"RegisterThing request: parameters.{SERIAL}: {exc}") from exc


@dataclass(frozen=True)
class ThingRegistered:
    thing_name: str
    device_configuration: dict[str, str]

    def to_bytes(self) -> bytes:
        return _dump(
            {"thingName": self.thing_name, "deviceConfiguration": self.device_configuration}
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ThingRegistered:
        f = _payload(data, "RegisterThing answer")
        config = f.doc.get("deviceConfiguration", {})
        if not isinstance(config, dict):
            raise f.fail("deviceConfiguration", "an object")
        thing = f.checked("thingName", f.text("thingName", max_length=128), check_thing_name)
        return cls(thing, {str(k): str(v) for k, v in config.items()})


# --- refusals (either call) ----------------------------------------------------------


@dataclass(frozen=True)
class CallRejected:
    """AWS's error answer to a provisioning call."""

    status_code: int
    error_code: str
    message: str

    def to_bytes(self) -> bytes:
        return _dump(
            {
                "statusCode": self.status_code,
                "errorCode": self.error_code,
                "errorMessage": self.message,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> CallRejected:
        f = _payload(data, "provisioning refusal")
        return cls(
            status_code=f.integer("statusCode", low=0, high=999),
            error_code=f.any_text("errorCode", "", max_length=256),
            message=f.any_text("errorMessage", "", max_length=4096),
        )


def refusal_for(serial: str, status: int, code: str, why: str) -> CallRejected:
    """A refusal of one serial's RegisterThing call that says whose it is.

    IoT Core answers only the connection that asked, so there a refusal is always
    the device's own. A broker that cannot (the local one) lets every waiting
    holder of the claim hear it; naming the serial lets the others ignore it.
    """
    return CallRejected(status, code, f"serial {serial}: {why}")


def is_for(rejected: CallRejected, serial: str) -> bool:
    """Whether a RegisterThing refusal may be this serial's: any that names no serial
    (IoT Core's), and those naming this one."""
    named = re.match(r"^serial ([A-Za-z0-9:_-]{1,128}): ", rejected.message)
    return named is None or named.group(1) == serial


# --- the pre-provisioning hook -------------------------------------------------------


@dataclass(frozen=True)
class HookEvent:
    """What IoT Core sends the pre-provisioning hook for one RegisterThing call."""

    claim_certificate_id: str
    certificate_id: str
    certificate_pem: str
    template_arn: str
    client_id: str
    parameters: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "claimCertificateId": self.claim_certificate_id,
            "certificateId": self.certificate_id,
            "certificatePem": self.certificate_pem,
            "templateArn": self.template_arn,
            "clientId": self.client_id,
            "parameters": self.parameters,
        }

    @classmethod
    def from_json(cls, doc: Any) -> HookEvent:
        f = Fields(doc, "pre-provisioning hook event", ProvisioningRefused)
        raw = f.doc.get("parameters", {})
        if not isinstance(raw, dict):
            raise f.fail("parameters", "an object")
        return cls(
            claim_certificate_id=f.any_text("claimCertificateId", ""),
            certificate_id=f.any_text("certificateId", ""),
            certificate_pem=f.any_text("certificatePem", "", max_length=16384),
            template_arn=f.any_text("templateArn", ""),
            client_id=f.any_text("clientId", ""),
            parameters={str(k): str(v) for k, v in raw.items()},
        )


@dataclass(frozen=True)
class HookAnswer:
    """The hook's answer: admit or not, and the parameters it sets (model, thing group)."""

    allow: bool
    overrides: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"allowProvisioning": self.allow}
        if self.overrides:
            body["parameterOverrides"] = self.overrides
        return body

    @classmethod
    def from_json(cls, doc: Any) -> HookAnswer:
        f = Fields(doc, "pre-provisioning hook answer", ProvisioningRefused)
        overrides = f.doc.get("parameterOverrides", {})
        if not isinstance(overrides, dict):
            raise f.fail("parameterOverrides", "an object")
        return cls(f.flag("allowProvisioning"), {str(k): str(v) for k, v in overrides.items()})

    @classmethod
    def admit(cls, model: str, thing_group: str) -> HookAnswer:
        return cls(True, {MODEL: check_model_name(model), THING_GROUP: thing_group})

    @classmethod
    def refuse(cls) -> HookAnswer:
        return cls(False, {})
