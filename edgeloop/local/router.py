"""What AWS wires for us, done locally: SQS → retrain, IoT rules → presign/status, a schedule.

The handlers are the Lambda handlers themselves, called with the event shapes
Lambda would give them.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from botocore.exceptions import BotoCoreError, ClientError
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop.contract import thing_of
from functions.common.rules import TOPIC_THING

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass
class LocalContext:
    """The parts of Lambda's context object the Powertools decorators read."""

    function_name: str
    memory_limit_in_mb: int = 1024
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:eu-west-1:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping delivers."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "eu-west-1",
            }
            for m in messages
        ]
    }


class EventRouter:
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        broker_url: str,
        handlers: dict[str, Handler],
        batching_window: float = 1.0,
        batch_size: int = 100,
        schedule_seconds: float = 2.0,
        status_rule: bool = True,
        rule_concurrency: int = 8,
    ) -> None:
        self.rule_topics = [("edgeloop/things/+/upload/request", 1)]
        if status_rule:
            self.rule_topics.append(("edgeloop/things/+/status", 1))
        self.sqs, self.queue_url, self.queue_arn = sqs, queue_url, queue_arn
        self.handlers = handlers
        self.batching_window, self.batch_size = batching_window, batch_size
        self.schedule_seconds = schedule_seconds
        self.retrain_invocations = 0
        self.errors: list[str] = []
        self._rules: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._stop = threading.Event()
        # One lock per event source: like separate Lambda functions, a long retrain
        # does not hold up upload requests or status reports.
        self._busy = {"sqs": threading.Lock(), "schedule": threading.Lock()}
        self._rules_running = 0
        self._rules_lock = threading.Lock()
        parsed = urlparse(broker_url)
        self._mqtt = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"edgeloop-rules-{uuid.uuid4().hex[:6]}"
        )
        self._mqtt.on_connect = self._subscribe
        self._mqtt.on_message = self._route
        self._mqtt.connect(parsed.hostname or "127.0.0.1", parsed.port or 1883)
        # Rule actions run concurrently, as Lambda scales a function out; the SQS
        # source stays at concurrency 1 here (the stack caps retrain at 2).
        self._threads = [
            threading.Thread(target=self._poll_queue, name="router-sqs", daemon=True),
            threading.Thread(target=self._schedule, name="router-schedule", daemon=True),
            *(
                threading.Thread(target=self._run_rules, name=f"router-rules-{i}", daemon=True)
                for i in range(rule_concurrency)
            ),
        ]

    def start(self) -> None:
        self._mqtt.loop_start()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._mqtt.loop_stop()
        self._mqtt.disconnect()
        for thread in self._threads:
            thread.join(10)

    # --- IoT rules -------------------------------------------------------------------

    def _subscribe(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(self.rule_topics)

    def _route(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        thing = thing_of(message.topic)
        try:
            payload = json.loads(message.payload)
        except ValueError:
            return  # IoT rules drop payloads that are not JSON, too
        if thing is None or not isinstance(payload, dict):
            return
        handler = "presign" if message.topic.endswith("/upload/request") else "status"
        # `SELECT *, topic(3) AS topic_thing`: the topic's thing is added, the payload kept.
        self._rules.put((handler, {**payload, TOPIC_THING: thing}))

    def _run_rules(self) -> None:
        while not self._stop.is_set():
            try:
                name, event = self._rules.get(timeout=0.2)
            except queue.Empty:
                continue
            with self._rules_lock:
                self._rules_running += 1
            try:
                self._invoke(name, event)
            finally:
                with self._rules_lock:
                    self._rules_running -= 1
                self._rules.task_done()

    # --- SQS event source --------------------------------------------------------------

    def _poll_queue(self) -> None:
        while not self._stop.is_set():
            messages = self._receive(wait=1)
            if not messages:
                continue
            with self._busy["sqs"]:
                deadline = time.monotonic() + self.batching_window
                while len(messages) < self.batch_size and time.monotonic() < deadline:
                    if self._stop.is_set():
                        return  # unacknowledged messages stay in the queue, as in SQS
                    messages.extend(self._receive(wait=0))
                    time.sleep(0.05)
                response = self._invoke("retrain", sqs_event(messages, self.queue_arn))
                self.retrain_invocations += 1
                failed = {
                    f["itemIdentifier"] for f in (response or {}).get("batchItemFailures", [])
                }
                done = [m for m in messages if m["MessageId"] not in failed]
                for start in range(0, len(done), 10):
                    try:
                        self.sqs.delete_message_batch(
                            QueueUrl=self.queue_url,
                            Entries=[
                                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                for i, m in enumerate(done[start : start + 10])
                            ],
                        )
                    except (BotoCoreError, ClientError) as exc:
                        # Undeleted messages come back after the visibility timeout
                        # and the retrain handler's idempotency makes them no-ops.
                        self.errors.append(f"sqs delete: {type(exc).__name__}: {exc}")

    def _receive(self, wait: int) -> list[dict[str, Any]]:
        try:
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=wait,
                AttributeNames=["All"],
            )
        except (BotoCoreError, ClientError) as exc:
            # Lambda's poller outlives a slow or failing SQS call; so does this one.
            self.errors.append(f"sqs receive: {type(exc).__name__}: {exc}")
            self._stop.wait(1.0)
            return []
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    # --- schedule ------------------------------------------------------------------------

    def _schedule(self) -> None:
        while not self._stop.wait(self.schedule_seconds):
            with self._busy["schedule"]:
                self._invoke("evaluate_rollouts", {})

    def _invoke(self, name: str, event: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return self.handlers[name](event, LocalContext(f"edgeloop-{name}"))
        except Exception as exc:  # a Lambda invocation that raised: logged, retried by its source
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            return None

    # --- idleness ------------------------------------------------------------------------

    def queue_depth(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    def idle(self) -> bool:
        if not self._rules.empty() or self.queue_depth():
            return False
        if self._rules_running or not self._busy["sqs"].acquire(blocking=False):
            return False
        self._busy["sqs"].release()
        return self._rules.empty() and not self._rules_running and self.queue_depth() == 0
