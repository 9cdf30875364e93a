"""Provisioning by claim against the local IoT Core: mosquitto with client certificates
and an ACL from the registry, the local CA, and the agent's own exchange."""

from __future__ import annotations

import logging
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import AgentConfig, parse_agent_config
from edge.errors import ProvisioningFailed
from edge.link import Link
from edge.provision import ensure_identity, load_identity
from edge.tls import broker_tls
from edgeloop.contract.device_policy import MODEL_ATTRIBUTE
from edgeloop.contract.provisioning import (
    MODEL,
    SERIAL,
    HookAnswer,
    HookEvent,
    create_from_csr,
    provisioning_template,
    template_name,
)
from edgeloop.contract.topics import RuleNames, ThingTopics, announcement, ingest_topic
from edgeloop.local.aws import MotoServer
from edgeloop.local.broker import BrokerTls, Mosquitto
from edgeloop.local.certificates import CLAIM_IDENTITY, LocalCa
from edgeloop.local.provisioning import LocalProvisioning
from tests.unit.edge.test_agent_config import fleet_root

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto")

TEMPLATE = template_name("edgeloop")
FLEET_GROUP = "fleet"
ALLOWED = {"sn-1": "digits", "sn-2": "digits", "sn-3": "vibration"}


@dataclass
class LocalIot:
    broker: Mosquitto
    ca: LocalCa
    service: LocalProvisioning
    iot: Any
    claim_cert: Path
    claim_key: Path
    directory: Path
    hook_calls: list[dict[str, Any]]
    root: Path

    def agent_config(self, name: str) -> AgentConfig:
        doc = {
            "device": {"n_features": 4},
            "broker": {"url": self.broker.url, "ca": str(self.ca.cert_path)},
            "artifacts": {"base_url": "http://127.0.0.1:9/"},
            "trust": {"root": str(self.root)},
            "state": {"dir": str(self.directory / name)},
            "provisioning": {
                "claim_cert": str(self.claim_cert),
                "claim_key": str(self.claim_key),
                "template": TEMPLATE,
                "timeout": 20.0,
            },
        }
        return parse_agent_config(doc, self.directory)


def _hook(calls: list[dict[str, Any]]) -> Any:
    def hook(event: dict[str, Any]) -> dict[str, Any]:
        calls.append(event)
        serial = HookEvent.from_json(event).parameters.get(SERIAL, "")
        model = ALLOWED.get(serial)
        return (HookAnswer.admit(model, FLEET_GROUP) if model else HookAnswer.refuse()).to_json()

    return hook


@pytest.fixture
def local_iot(tmp_path: Path) -> Iterator[LocalIot]:
    root = tmp_path / "root.json"
    root.write_bytes(fleet_root(tmp_path))
    ca = LocalCa(tmp_path / "ca")
    server = ca.key_pair("broker", "localhost", hosts=("127.0.0.1", "localhost"), server=True)
    claim = ca.key_pair("claim", CLAIM_IDENTITY)
    broker = Mosquitto(BrokerTls(ca.cert_path, server.cert, server.key), tmp_path / "broker")
    aws = MotoServer(own_process=True)
    iot = aws.client("iot")
    iot.create_thing_group(thingGroupName=FLEET_GROUP)
    calls: list[dict[str, Any]] = []
    service = LocalProvisioning(
        broker,
        ca,
        iot,
        iot,
        TEMPLATE,
        provisioning_template("edgeloop-device"),
        _hook(calls),
        RuleNames(),
        {"Version": "2012-10-17", "Statement": []},
    )
    try:
        yield LocalIot(broker, ca, service, iot, claim.cert, claim.key, tmp_path, calls, root)
    finally:
        service.close()
        broker.close()
        aws.stop()


class Probe:
    """A plain MQTT client with a certificate: what a device (or an impostor) can do."""

    def __init__(self, iot: LocalIot, cert: Path, key: Path, client_id: str) -> None:
        config = iot.agent_config("probe")
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.tls_set_context(broker_tls(config.broker, cert, key))
        self.received: list[tuple[str, bytes]] = []
        self.granted: dict[int, list[bool]] = {}
        self._event = threading.Condition()
        self.client.on_message = self._message
        self.client.on_subscribe = self._subscribed
        connected = threading.Event()
        self.client.on_connect = lambda *_: connected.set()
        self.client.connect(config.broker.host, config.broker.port)
        self.client.loop_start()
        assert connected.wait(10), "no connection"

    def _message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._event:
            self.received.append((message.topic, bytes(message.payload)))
            self._event.notify_all()

    def _subscribed(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        with self._event:
            self.granted[mid] = [not r.is_failure for r in reasons]
            self._event.notify_all()

    def subscribe(self, topic: str) -> bool:
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        with self._event:
            assert self._event.wait_for(lambda: mid in self.granted, 10)
            return self.granted[mid][0]

    def wait_for(self, topic: str, timeout: float = 10.0) -> bool:
        with self._event:
            return self._event.wait_for(lambda: any(t == topic for t, _ in self.received), timeout)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def cloud_probe(iot: LocalIot) -> Probe:
    """The cloud's own listener (the rules engine's view), by password."""
    probe = Probe.__new__(Probe)
    parsed = urlparse(iot.broker.cloud_url)
    probe.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cloud-probe")
    probe.client.username_pw_set(unquote(parsed.username or ""), unquote(parsed.password or ""))
    probe.received, probe.granted, probe._event = [], {}, threading.Condition()
    probe.client.on_message = probe._message
    probe.client.on_subscribe = probe._subscribed
    connected = threading.Event()
    probe.client.on_connect = lambda *_: connected.set()
    probe.client.connect("127.0.0.1", iot.broker.cloud_port)
    probe.client.loop_start()
    assert connected.wait(10)
    return probe


def test_a_device_makes_its_own_key_and_becomes_the_thing_its_serial_names(
    local_iot: LocalIot,
) -> None:
    config = ensure_identity(local_iot.agent_config("sn-1"), "sn-1")
    assert (config.device.thing, config.device.model) == ("sn-1", "digits")
    identity = load_identity(local_iot.directory / "sn-1" / "identity")
    assert identity is not None
    assert config.broker.cert == identity.cert
    # The key was made here and is owner-only; the registry holds the certificate.
    assert stat.S_IMODE(identity.key.stat().st_mode) == 0o600
    described = local_iot.iot.describe_certificate(certificateId=identity.certificate_id)
    assert described["certificateDescription"]["status"] == "ACTIVE"
    thing = local_iot.iot.describe_thing(thingName="sn-1")
    assert thing["attributes"][MODEL_ATTRIBUTE] == "digits"
    principals = local_iot.iot.list_thing_principals(thingName="sn-1")["principals"]
    assert [p.rsplit("/", 1)[-1] for p in principals] == [identity.certificate_id]
    # The hook saw the serial, and the model it chose is the one the thing got.
    assert local_iot.hook_calls[-1]["parameters"] == {SERIAL: "sn-1"}
    assert MODEL not in local_iot.hook_calls[-1]["parameters"]
    # A second start uses the identity and never asks again.
    again = ensure_identity(local_iot.agent_config("sn-1"))
    assert again.device.thing == "sn-1"
    assert len(local_iot.hook_calls) == 1


def test_a_serial_not_on_the_allow_list_is_refused_for_good_with_the_reason(
    local_iot: LocalIot,
) -> None:
    with pytest.raises(ProvisioningFailed, match="not on the fleet's allow-list") as refused:
        ensure_identity(local_iot.agent_config("sn-9"), "sn-9")
    assert refused.value.final
    assert load_identity(local_iot.directory / "sn-9" / "identity") is None
    with pytest.raises(local_iot.iot.exceptions.ResourceNotFoundException):
        local_iot.iot.describe_thing(thingName="sn-9")


def test_devices_onboarding_at_once_each_take_only_their_own_answers(
    local_iot: LocalIot,
) -> None:
    serials = ["sn-1", "sn-2", "sn-3", "sn-9"]
    results: dict[str, Any] = {}

    def onboard(serial: str) -> None:
        try:
            results[serial] = ensure_identity(local_iot.agent_config(serial), serial)
        except ProvisioningFailed as exc:
            results[serial] = exc

    threads = [threading.Thread(target=onboard, args=(s,)) for s in serials]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert isinstance(results["sn-9"], ProvisioningFailed)
    for serial in ("sn-1", "sn-2", "sn-3"):
        config = results[serial]
        assert isinstance(config, AgentConfig), config
        assert (config.device.thing, config.device.model) == (serial, ALLOWED[serial])


def test_the_broker_holds_each_certificate_to_its_own_thing_and_model(
    local_iot: LocalIot,
) -> None:
    one = ensure_identity(local_iot.agent_config("sn-1"), "sn-1")
    ensure_identity(local_iot.agent_config("sn-3"), "sn-3")
    assert one.broker.cert is not None
    assert one.broker.key is not None
    own, other = ThingTopics("sn-1"), ThingTopics("sn-3")
    device = Probe(local_iot, one.broker.cert, one.broker.key, "sn-1")
    cloud = cloud_probe(local_iot)
    try:
        # It hears its own model's nudges and its own topics, never another model's or
        # thing's, whatever it subscribes to (mosquitto filters at delivery). The cloud
        # publishes the foreign ones first; once the device's own have arrived, the
        # foreign ones would have too.
        foreign = [announcement("vibration", 7), other.nudge, other.upload_response]
        mine = [announcement("digits", 7), own.nudge, own.upload_response]
        for topic in ("#", *foreign, *mine):
            device.subscribe(topic)
        for topic in (*foreign, *mine):
            cloud.client.publish(topic, b"{}", qos=1).wait_for_publish(5)
        for topic in mine:
            assert device.wait_for(topic)
        assert sorted(t for t, _ in device.received) == sorted(mine)
        # What it publishes as another thing reaches nobody: the cloud, subscribed to
        # both, gets the device's own report (published after) and not the impostor's.
        rules = RuleNames()
        impostures = [
            other.status,
            other.upload_request,
            ingest_topic(rules.status, other.status),
            ingest_topic(rules.upload_requests, other.upload_request),
            other.presence,
        ]
        # Its own presence stand-in is the one local-only grant (no lifecycle events).
        owned = [own.presence, own.status]
        for topic in (*impostures, *owned):
            assert cloud.subscribe(topic)
        for topic in (*impostures, *owned):
            device.client.publish(topic, b"{}", qos=1).wait_for_publish(5)
        assert cloud.wait_for(own.status)
        assert [t for t, _ in cloud.received] == owned
        # The claim may provision and hear nothing else.
        claim = Probe(local_iot, local_iot.claim_cert, local_iot.claim_key, "claim-probe")
        try:
            claim.subscribe("#")
            claim.subscribe(announcement("digits", 7))
            claim.subscribe(create_from_csr().accepted)
            cloud.client.publish(announcement("digits", 7), b"{}", qos=1).wait_for_publish(5)
            cloud.client.publish(create_from_csr().accepted, b"{}", qos=1).wait_for_publish(5)
            assert claim.wait_for(create_from_csr().accepted)
            assert [t for t, _ in claim.received] == [create_from_csr().accepted]
        finally:
            claim.close()
    finally:
        device.close()
        cloud.close()


def test_a_certificate_from_another_clouds_ca_is_refused_and_the_agent_says_why(
    local_iot: LocalIot, caplog: pytest.LogCaptureFixture
) -> None:
    """A device kept the identity an earlier local cloud issued: the broker drops it
    before CONNACK, and the agent says so and what to do, instead of reconnecting in
    silence."""
    other = LocalCa(local_iot.directory / "earlier-cloud-ca").key_pair("sn-old", "sn-old")
    config = local_iot.agent_config("sn-old")
    broker = replace(
        config.broker, cert=other.cert, key=other.key, reconnect_min=0.1, reconnect_max=0.5
    )
    link = Link(broker, "sn-old", "digits", lambda _: None)
    with caplog.at_level(logging.WARNING, logger="edge.link"):
        link.start()
        try:
            deadline = time.monotonic() + 30
            while "event=connection_refused" not in caplog.text:
                assert time.monotonic() < deadline, caplog.text
                time.sleep(0.05)
        finally:
            link.stop()
    assert not link.connected
    said = next(r.getMessage() for r in caplog.records if "connection_refused" in r.getMessage())
    assert "does not accept this device's certificate" in said
    assert "identity/" in said
