"""The cloud side of an agent test: the local runtime's IoT rules with stand-in actions.

Upload requests get the real presign logic against moto's S3 (and its thing
registry), so uploads are real presigned POSTs over HTTP; status reports and
events are kept for the test to read; nudges are retained publishes, as the
functions make them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop.contract import Nudge, RuleNames, ThingTopics, UploadAnswer, announcement
from edgeloop.contract.stages import BANDS
from edgeloop.local.router import IotRules, Rule
from functions.common.env import PresignEnv
from functions.common.identity import ThingRegistryIdentity, enroll
from functions.common.rules import split_rule_event
from functions.presign.logic import PresignRefused, presign, refusal


class CloudStandIn:
    def __init__(self, broker_url: str, moto_endpoint: str, bucket: str, config_dir: Path) -> None:
        self.s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="eu-west-1")
        self.s3.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        self.bucket = bucket
        self.iot = boto3.client("iot", endpoint_url=moto_endpoint, region_name="eu-west-1")
        canary_group = f"canary-{bucket}"
        self.env = PresignEnv.model_validate(
            {
                "DATA_BUCKET": bucket,
                "MODEL_CONFIG_DIR": str(config_dir),
                "CANARY_GROUP": canary_group,
                "FLEET_TABLE": "unused-the-stand-in-counts-no-grants",
            }
        )
        self.identity = ThingRegistryIdentity(self.iot, canary_group)
        self.statuses: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        parsed = urlparse(broker_url)
        # What the functions publish with: answers to upload requests, announcements.
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cloud-stand-in")
        self.client.reconnect_delay_set(1, 2)
        self.client.connect(parsed.hostname or "127.0.0.1", parsed.port or 1883)
        self.client.loop_start()
        names = RuleNames()
        self.rules = IotRules(
            broker_url,
            [
                Rule(names.upload_requests, "edgeloop/things/+/upload/request", self._presign),
                Rule(names.status, "edgeloop/things/+/status", self._keep(self.statuses)),
                # No stack has this rule; the tests read alarm events through it.
                Rule("test_events", "edgeloop/things/+/events", self._keep(self.events)),
            ],
            # One at a time, in arrival order: tests read a thing's last status.
            concurrency=1,
        )
        self.rules.start()

    def _presign(self, event: dict[str, Any]) -> None:
        thing, doc = split_rule_event(event)
        try:
            answer: UploadAnswer = presign(self.env, self.s3, thing, doc, identity=self.identity)
        except PresignRefused as exc:
            answer = refusal(doc, exc)
        self.client.publish(ThingTopics(thing).upload_response, answer.to_bytes(), qos=1)

    def _keep(self, into: list[tuple[str, dict[str, Any]]]) -> Callable[[dict[str, Any]], None]:
        def keep(event: dict[str, Any]) -> None:
            with self._lock:
                into.append(split_rule_event(event))

        return keep

    def enroll(self, thing: str, model: str) -> None:
        """Register a device in the stand-in's thing registry, as the platform team does."""
        enroll(self.iot, thing, model)

    def nudge(self, model: str, version: int | None = None, payload: bytes | None = None) -> None:
        """Nudge every band's retained topic, as a rollout that reached the whole fleet
        has: whatever its thing name, every device of `model` refreshes."""
        body = Nudge(model, version).to_bytes() if payload is None else payload
        self._publish_retained([announcement(model, band) for band in range(BANDS)], body)

    def nudge_thing(self, thing: str, payload: bytes) -> None:
        """A message on one device's own retained topic, as a named canary hears first."""
        self._publish_retained([ThingTopics(thing).nudge], payload)

    def _publish_retained(self, topics: list[str], payload: bytes) -> None:
        deadline = time.monotonic() + 15
        while not self.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)  # after a broker restart, paho is still reconnecting
        sent = [self.client.publish(topic, payload, qos=1, retain=True) for topic in topics]
        for info in sent:
            info.wait_for_publish(5)

    def uploaded_keys(self, prefix: str = "data/") -> list[str]:
        response = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in response.get("Contents", []))

    def last_status(self, thing: str) -> dict[str, Any] | None:
        with self._lock:
            mine = [doc for t, doc in self.statuses if t == thing]
        return mine[-1] if mine else None

    def close(self) -> None:
        self.rules.stop()
        self.client.loop_stop()
        self.client.disconnect()
