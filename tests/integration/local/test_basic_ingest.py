"""Basic Ingest on the local brokers: `$aws/rules/{rule}/...` reaches the rule it names.

Both brokers the local runtime runs (mosquitto, and amqtt embedded) carry it, the
rules engine routes it by the rule's name as AWS does, and the plain topic still
reaches the same rule for agents that do not use Basic Ingest.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import BrokerSection
from edge.link import Link
from edgeloop.contract import Health, RuleNames, StatusReport, ThingTopics, ingest_topic
from edgeloop.local.broker import EmbeddedBroker
from edgeloop.local.router import IotRules, Rule
from edgeloop.local.runtime import LocalRuntime
from functions.common.fleet import FleetTable
from functions.common.rules import split_rule_event
from tests.support_broker import Mosquitto, start_broker
from tests.support_world import wait_for

REPO = Path(__file__).resolve().parents[3]
RULES = RuleNames()
PUMP_1 = ThingTopics("pump-1")
HAS_MOSQUITTO = bool(shutil.which("mosquitto"))


@pytest.fixture(params=["mosquitto", "amqtt"])
def broker(request: pytest.FixtureRequest) -> Iterator[Mosquitto | EmbeddedBroker]:
    if request.param == "mosquitto" and not HAS_MOSQUITTO:
        pytest.skip("mosquitto is not installed (make test installs it)")
    running = start_broker(request.param)
    yield running
    running.close()


class Rules:
    """The local rules engine with the stack's two device rules, keeping what each gets."""

    def __init__(self, broker_url: str) -> None:
        self.status: list[tuple[str, dict[str, Any]]] = []
        self.uploads: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.engine = IotRules(
            broker_url,
            [
                Rule(RULES.status, "edgeloop/things/+/status", self._keep(self.status)),
                Rule(
                    RULES.upload_requests,
                    "edgeloop/things/+/upload/request",
                    self._keep(self.uploads),
                ),
            ],
            concurrency=1,
        )
        self.engine.start()
        assert self.engine.wait_ready(10), "the rules never subscribed"

    def _keep(self, into: list[tuple[str, dict[str, Any]]]) -> Callable[[dict[str, Any]], None]:
        def keep(event: dict[str, Any]) -> None:
            with self._lock:
                into.append(split_rule_event(event))

        return keep


@pytest.fixture
def rules(broker: Mosquitto | EmbeddedBroker) -> Iterator[Rules]:
    running = Rules(broker.url)
    yield running
    running.engine.stop()


class Device:
    """A bare MQTT client connected as a thing, publishing at QoS 1 and waiting for the ack."""

    def __init__(self, broker_url: str, thing: str) -> None:
        port = int(broker_url.rsplit(":", 1)[1])
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=thing)
        self.disconnects = 0
        self.client.on_disconnect = self._disconnected
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _disconnected(self, *_: Any) -> None:
        self.disconnects += 1

    def publish(self, topic: str, doc: dict[str, Any]) -> None:
        info = self.client.publish(topic, json.dumps(doc).encode(), qos=1)
        info.wait_for_publish(5)
        assert info.is_published(), f"the broker never acknowledged {topic}"

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def device(broker: Mosquitto | EmbeddedBroker) -> Iterator[Device]:
    running = Device(broker.url, "pump-1")
    yield running
    running.close()


def _report(**fields: Any) -> dict[str, Any]:
    return {**StatusReport("vibration", None, Health.NO_MODEL).to_json(), **fields}


def test_a_basic_ingest_status_reaches_the_status_rule_with_the_topics_thing(
    rules: Rules, device: Device
) -> None:
    sent = _report(detail="by rule")
    device.publish(ingest_topic(RULES.status, PUMP_1.status), sent)
    wait_for(lambda: len(rules.status) == 1, what="the status rule's event")
    assert rules.status == [("pump-1", sent)]
    assert rules.uploads == []
    assert device.disconnects == 0  # the broker took the '$aws/' publish


def test_the_plain_topic_still_reaches_the_same_rule(rules: Rules, device: Device) -> None:
    sent = _report(detail="plain")
    device.publish(PUMP_1.status, sent)
    device.publish(ingest_topic(RULES.upload_requests, PUMP_1.upload_request), {"n": 1})
    device.publish(PUMP_1.upload_request, {"n": 2})
    wait_for(lambda: len(rules.status) == 1 and len(rules.uploads) == 2, what="both rules")
    assert rules.status == [("pump-1", sent)]
    assert rules.uploads == [("pump-1", {"n": 1}), ("pump-1", {"n": 2})]


def test_a_publish_naming_no_rule_is_dropped_with_a_log_line(
    rules: Rules, device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edgeloop.local.router")
    unknown = ingest_topic("edgeloop_nothing", PUMP_1.status)
    device.publish(unknown, _report(detail="lost"))
    # One subscription carries both, in order: once the second arrived, the first was seen.
    after = _report(detail="after")
    device.publish(ingest_topic(RULES.status, PUMP_1.status), after)
    wait_for(lambda: len(rules.status) == 1, what="the report after the lost one")
    assert rules.status == [("pump-1", after)]
    assert rules.engine.rules_not_found == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"event=rule_not_found rule=edgeloop_nothing topic={unknown}"
    ]


def test_a_basic_ingest_publish_goes_to_the_rule_it_names_not_the_one_its_topic_matches(
    rules: Rules, device: Device
) -> None:
    """AWS skips the FROM filter for Basic Ingest; the policy decides which topic a device
    may put after which rule's prefix."""
    device.publish(ingest_topic(RULES.status, PUMP_1.upload_request), _report(detail="named"))
    wait_for(lambda: len(rules.status) == 1, what="the named rule's event")
    assert rules.uploads == []


def test_a_report_on_a_things_ingest_topic_is_that_things_whatever_it_claims(
    rules: Rules, device: Device
) -> None:
    """Case 16 through Basic Ingest: the rule hands over the topic's thing beside the
    payload's claim, and the status function refuses a report claiming another thing
    (test_cloud_boundaries). Which thing's topic a device may publish on is the IoT
    policy's to pin (test_stack); the local brokers let anyone publish anywhere, for
    the plain topics as for these."""
    device.publish(ingest_topic(RULES.status, PUMP_1.status), _report(thing="pump-2"))
    wait_for(lambda: len(rules.status) == 1, what="the status rule's event")
    [(thing, payload)] = rules.status
    assert (thing, payload["thing"]) == ("pump-1", "pump-2")


def test_an_agents_status_reaches_the_status_function_by_basic_ingest_and_an_old_agents_too() -> (
    None
):
    broker = start_broker("mosquitto" if HAS_MOSQUITTO else "amqtt")
    links: list[Link] = []
    try:
        with LocalRuntime(
            {"vibration": (REPO / "models" / "vibration.toml").read_text()},
            broker_url=broker.url,
        ) as cloud:
            fleet = FleetTable(cloud.client("dynamodb"), cloud.resources.fleet_table)
            for thing, basic_ingest in (("pump-1", True), ("pump-2", False)):
                cloud.enroll(thing, "vibration")
                link = Link(
                    BrokerSection(url=broker.url, basic_ingest=basic_ingest),
                    thing,
                    "vibration",
                    on_nudge=lambda _: None,
                )
                links.append(link)
                link.start()
                assert link.wait_connected(10)
                link.publish(
                    link.status_topic, StatusReport("vibration", None, Health.NO_MODEL).to_bytes()
                )
            assert (
                links[0].status_topic == "$aws/rules/edgeloop_status/edgeloop/things/pump-1/status"
            )
            assert links[1].status_topic == "edgeloop/things/pump-2/status"
            wait_for(
                lambda: fleet.get("pump-1") is not None and fleet.get("pump-2") is not None,
                timeout=30,
                what="both reports in the fleet table",
            )
            assert cloud.router.errors == []
            for link in links:
                link.stop()
            links.clear()
    finally:
        for link in links:
            link.stop()
        broker.close()


def test_a_failed_rule_action_is_retried_as_lambda_retries_an_asynchronous_call(
    broker: Mosquitto | EmbeddedBroker, device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edgeloop.local.router.ASYNC_RETRY_PAUSES", (0.05, 0.05))
    calls: list[str] = []

    def flaky(event: dict[str, Any]) -> None:
        thing, _ = split_rule_event(event)
        calls.append(thing)
        if thing == "pump-1" and len(calls) == 1:
            raise TimeoutError("the table did not answer")
        if thing == "pump-2":
            raise TimeoutError("never answers")

    engine = IotRules(broker.url, [Rule(RULES.status, "edgeloop/things/+/status", flaky)], 1)
    engine.start()
    try:
        assert engine.wait_ready(10), "the rules never subscribed"
        device.publish(ingest_topic(RULES.status, PUMP_1.status), _report())
        wait_for(lambda: calls == ["pump-1", "pump-1"], what="the retried action")
        assert engine.errors == []  # a failure that a retry made good is no error
        device.publish(ingest_topic(RULES.status, ThingTopics("pump-2").status), _report())
        wait_for(lambda: len(engine.errors) == 1, what="the action that kept failing")
        assert calls[2:] == ["pump-2"] * 3  # the call and two retries, as Lambda makes
        assert "never answers" in engine.errors[0]
    finally:
        engine.stop()
