"""IoT Core's fleet provisioning by claim, done locally.

It answers `CreateCertificateFromCsr` and `RegisterThing` on the local broker,
on AWS's topics and in AWS's payloads (`edgeloop.contract.provisioning`). The CA
is the local one; the pre-provisioning hook is the stack's own function, run from
the packaged task tree; the template applied is the one the stack deploys. The
thing registry it writes is moto's, and the broker's ACL is generated from that
registry after each change, from the same grants the stack's IoT policies are
rendered from. So what a device may do locally follows from the cloud's records
as it does on AWS, never from what the device says.

One difference: IoT Core answers a provisioning call only on the connection that
made it. mosquitto has no way to; every holder of the claim that is waiting
hears every answer. A device takes an answer as its own only if it carries its
own key (a certificate) or its own serial (a thing, or a refusal, which names
the serial locally: `refusal_for`).
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from edgeloop.contract.device_policy import MODEL_ATTRIBUTE, device_grants
from edgeloop.contract.provisioning import (
    CERTIFICATE_ID,
    CERTIFICATE_RESOURCE,
    POLICY_RESOURCE,
    THING_RESOURCE,
    CallRejected,
    CertificateIssued,
    HookAnswer,
    HookEvent,
    ProvisioningRefused,
    RegisterRequest,
    ThingRegistered,
    claim_grants,
    create_from_csr,
    parse_csr_request,
    refusal_for,
    register_thing,
)
from edgeloop.contract.topics import RuleNames, ThingTopics
from edgeloop.local.broker import Mosquitto, acl_lines
from edgeloop.local.certificates import CLAIM_IDENTITY, CsrRefused, LocalCa, common_name
from functions.common.mqtt_publisher import cloud_client

log = logging.getLogger(__name__)

WORKERS = 4
# IoT Core deletes a certificate from a CSR that is not registered within the hour.
OWNERSHIP_SECONDS = 3600.0

Hook = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class _Pending:
    certificate_id: str
    certificate_arn: str
    pem: str
    issued_at: float


def _resolve(node: Any, parameters: dict[str, str]) -> Any:
    """The template's `Ref`s replaced by parameter values (the only function it uses)."""
    if isinstance(node, dict):
        if set(node) == {"Ref"}:
            name = node["Ref"]
            if name not in parameters:
                raise ProvisioningRefused(f"the template needs parameter {name}, not given")
            return parameters[name]
        return {k: _resolve(v, parameters) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, parameters) for v in node]
    return node


class LocalProvisioning:
    def __init__(
        self,
        broker: Mosquitto,
        ca: LocalCa,
        iot: Any,
        provisioning_role: Any,
        template_name: str,
        template_body: dict[str, Any],
        hook: Hook,
        rules: RuleNames,
        device_policy_document: dict[str, Any],
        on_registered: Callable[[str], None] | None = None,
    ) -> None:
        self.broker = broker
        self.ca = ca
        # IoT Core's own records (certificates from CSRs, the broker's view of them) are
        # kept as the service; the template is applied as the template's role.
        self.iot = iot
        self.role = provisioning_role
        self.template_name = template_name
        self.template = template_body
        self.hook = hook
        self.rules = rules
        self.policy_document = device_policy_document
        self.on_registered = on_registered
        self.errors: list[str] = []
        # What the cloud's side says of each RegisterThing it refused, and each thing made.
        self.refusals: list[str] = []
        self.registered: list[str] = []
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        # Each identity's ACL block, kept from the registry: read whole at start, and
        # each registration's thing read again as it is made.
        self._blocks: dict[str, str] = {}
        self._acl_lock = threading.Lock()
        # Calls are answered off paho's network thread, a few at once: one call runs
        # the hook (a function's cold start) and a dozen registry requests, and a
        # fleet onboarding at once must not queue behind it.
        self._calls: queue.Queue[mqtt.MQTTMessage | None] = queue.Queue()
        self._workers = [
            threading.Thread(target=self._work, name=f"provisioning-{i}", daemon=True)
            for i in range(WORKERS)
        ]
        for worker in self._workers:
            worker.start()
        self._csr = create_from_csr()
        self._register = register_thing(template_name)
        self._ready = threading.Event()
        self._client, host, port = cloud_client(
            broker.cloud_url, f"edgeloop-provisioning-{secrets.token_hex(3)}"
        )
        self._client.on_connect = self._subscribe
        self._client.on_subscribe = lambda *_: self._ready.set()
        self._client.on_message = self._message
        self._client.reconnect_delay_set(1, 2)
        self._deploy_policy()
        self.write_acl()
        self._client.connect(host, port)
        self._client.loop_start()
        if not self._ready.wait(10):
            raise TimeoutError("the local provisioning service did not subscribe within 10 s")

    def _deploy_policy(self) -> None:
        """The device policy the template attaches, as the stack deploys it (the local
        stack makes no IoT policies of its own)."""
        name = self.template["Resources"][POLICY_RESOURCE]["Properties"]["PolicyName"]
        try:
            self.iot.get_policy(policyName=name)
        except self.iot.exceptions.ResourceNotFoundException:
            self.iot.create_policy(policyName=name, policyDocument=json.dumps(self.policy_document))

    def close(self) -> None:
        for _ in self._workers:
            self._calls.put(None)
        self._client.loop_stop()
        self._client.disconnect()
        for worker in self._workers:
            worker.join(10)

    def _subscribe(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe([(self._csr.request, 1), (self._register.request, 1)])

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._calls.put(message)

    def _work(self) -> None:
        while (message := self._calls.get()) is not None:
            self._answer(message)

    def _answer(self, message: mqtt.MQTTMessage) -> None:
        try:
            if message.topic == self._csr.request:
                self._answer_csr(bytes(message.payload))
            elif message.topic == self._register.request:
                self._answer_register(bytes(message.payload))
        except Exception as exc:
            log.exception("provisioning call on %s failed", message.topic)
            self.errors.append(f"{message.topic}: {type(exc).__name__}: {exc}")
            topic = self._csr if message.topic == self._csr.request else self._register
            self._publish(
                topic.rejected, CallRejected(500, "InternalFailure", str(exc)[:500]).to_bytes()
            )

    def _publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1)

    # --- CreateCertificateFromCsr ----------------------------------------------------

    def _answer_csr(self, payload: bytes) -> None:
        try:
            pem = self.ca.sign_csr(parse_csr_request(payload))
        except (ProvisioningRefused, CsrRefused) as exc:
            self._publish(
                self._csr.rejected, CallRejected(400, "InvalidPayload", str(exc)).to_bytes()
            )
            return
        # The registry records it as IoT Core does: not active until RegisterThing.
        made = self.iot.register_certificate_without_ca(certificatePem=pem, status="INACTIVE")
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._pending = {
                t: p for t, p in self._pending.items() if now - p.issued_at < OWNERSHIP_SECONDS
            }
            self._pending[token] = _Pending(made["certificateId"], made["certificateArn"], pem, now)
        self._publish(
            self._csr.accepted,
            CertificateIssued(made["certificateId"], pem, token).to_bytes(),
        )

    # --- RegisterThing ---------------------------------------------------------------

    def _refuse(self, serial: str, status: int, code: str, why: str) -> None:
        refusal = refusal_for(serial, status, code, why)
        self.refusals.append(refusal.message)
        log.warning("event=provisioning_refused serial=%s reason=%r", serial, why)
        self._publish(self._register.rejected, refusal.to_bytes())

    def _answer_register(self, payload: bytes) -> None:
        try:
            request = RegisterRequest.from_bytes(payload)
            serial = request.serial
        except ProvisioningRefused as exc:
            self._publish(
                self._register.rejected, CallRejected(400, "InvalidPayload", str(exc)).to_bytes()
            )
            return
        with self._lock:
            pending = self._pending.pop(request.ownership_token, None)
        if pending is None or time.monotonic() - pending.issued_at >= OWNERSHIP_SECONDS:
            self._refuse(
                serial,
                400,
                "InvalidCertificateOwnershipToken",
                "the certificate ownership token is unknown or expired: "
                "call CreateCertificateFromCsr again",
            )
            return
        if common_name(pending.pem) != serial:
            self._refuse(
                serial,
                400,
                "InvalidParameters",
                "the certificate was made for another serial: "
                "the CSR's common name must be the serial registered",
            )
            return
        event = HookEvent(
            claim_certificate_id="",
            certificate_id=pending.certificate_id,
            certificate_pem=pending.pem,
            template_arn=f"arn:aws:iot:local:000000000000:provisioningtemplate/{self.template_name}",
            client_id="",
            parameters=dict(request.parameters),
        )
        answer = HookAnswer.from_json(self.hook(event.to_json()))
        if not answer.allow:
            self._refuse(
                serial,
                403,
                "AccessDenied",
                "the pre-provisioning hook refused it: the serial is not on the fleet's "
                f"allow-list (the platform team admits it with `edgeloop fleet allow {serial} "
                "--model MODEL`)",
            )
            return
        parameters = {
            **request.parameters,
            **answer.overrides,
            CERTIFICATE_ID: pending.certificate_id,
        }
        thing, configuration = self._apply(parameters, pending)
        self.write_acl(thing)
        self.registered.append(thing)
        if self.on_registered is not None:
            self.on_registered(thing)
        self._publish(self._register.accepted, ThingRegistered(thing, configuration).to_bytes())

    def _apply(self, parameters: dict[str, str], pending: _Pending) -> tuple[str, dict[str, str]]:
        """The template's resources, as IoT Core's provisioning role creates them."""
        body = _resolve(self.template, parameters)
        resources = body["Resources"]
        thing_props = resources[THING_RESOURCE]["Properties"]
        thing = thing_props["ThingName"]
        attributes = thing_props.get("AttributePayload", {})
        try:
            self.role.describe_thing(thingName=thing)
            self.role.update_thing(
                thingName=thing, attributePayload={"attributes": attributes, "merge": True}
            )
        except self.role.exceptions.ResourceNotFoundException:
            self.role.create_thing(thingName=thing, attributePayload={"attributes": attributes})
        wanted = set(thing_props.get("ThingGroups", []))
        held = {
            g["groupName"]
            for g in self.role.list_thing_groups_for_thing(thingName=thing)["thingGroups"]
        }
        for group in held - wanted:
            self.role.remove_thing_from_thing_group(thingGroupName=group, thingName=thing)
        for group in wanted - held:
            self.role.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
        policy = resources[POLICY_RESOURCE]["Properties"]["PolicyName"]
        self.role.attach_policy(policyName=policy, target=pending.certificate_arn)
        self.role.attach_thing_principal(thingName=thing, principal=pending.certificate_arn)
        status = resources[CERTIFICATE_RESOURCE]["Properties"].get("Status", "Active")
        self.role.update_certificate(certificateId=pending.certificate_id, newStatus=status.upper())
        configuration = {str(k): str(v) for k, v in body.get("DeviceConfiguration", {}).items()}
        return thing, configuration

    # --- the broker's ACL, from the registry -----------------------------------------

    def _block(self, thing: str) -> tuple[str, str] | None:
        """One thing's ACL block, keyed by its certificate's identity, from the registry."""
        model = (
            self.iot.describe_thing(thingName=thing).get("attributes", {}).get(MODEL_ATTRIBUTE, "")
        )
        grants = device_grants(self.rules)
        # No model, no nudges: the grant's variable is left unmatched. One grant is
        # local only: mosquitto publishes no lifecycle events, so the agent's own
        # presence stand-in (its "connected" and its last will) must be allowed.
        lines = "\n".join(
            [*acl_lines(grants, thing, model or "-"), f"topic write {ThingTopics(thing).presence}"]
        )
        found = None
        for principal in self.iot.list_thing_principals(thingName=thing)["principals"]:
            described = self.iot.describe_certificate(certificateId=principal.rsplit("/", 1)[-1])
            description = described["certificateDescription"]
            if description["status"] == "ACTIVE":
                identity = common_name(description["certificatePem"])
                found = (identity, f"user {identity}\n{lines}")
        return found

    def acl(self) -> str:
        """mosquitto's ACL for every identity the registry knows: the claim's, and each
        active certificate's, as the thing it is attached to."""
        blocks = {
            CLAIM_IDENTITY: f"user {CLAIM_IDENTITY}\n"
            + "\n".join(acl_lines(claim_grants(self.template_name)))
        }
        pages = self.iot.get_paginator("list_things").paginate()
        for thing in (t["thingName"] for page in pages for t in page["things"]):
            block = self._block(thing)
            if block is not None:
                blocks[block[0]] = block[1]
        return "\n\n".join(blocks.values()) + "\n"

    def write_acl(self, thing: str | None = None) -> None:
        """The ACL from the whole registry, or with one thing's block read again."""
        with self._acl_lock:
            if thing is None:
                text = self.acl()
                self._blocks = {
                    b.split("\n", 1)[0].removeprefix("user "): b for b in text.strip().split("\n\n")
                }
            else:
                block = self._block(thing)
                if block is not None:
                    self._blocks[block[0]] = block[1]
            self.broker.set_acl("\n\n".join(self._blocks.values()) + "\n")
