"""What AWS wires for us, done locally: SQS → retrain, IoT rules → presign/status, the
presence rule → its table (IoT Core's lifecycle events emulated), a schedule, and the
registry's stream → the schedule function.

The handlers are the Lambda handlers themselves, called with the event shapes
Lambda would give them.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from botocore.exceptions import BotoCoreError, ClientError

from edgeloop.contract import DEFAULT_STACK, INGEST_PREFIX, RuleNames, parse_ingest, thing_of
from edgeloop.contract.presence import (
    CLEAN,
    CONNECTED,
    LIFECYCLE_PREFIX,
    PresenceMessageInvalid,
    lifecycle_topic,
    parse_presence_message,
)
from edgeloop.local.streams import StreamReader, passes, stream_event
from functions.common.mqtt_publisher import cloud_client
from functions.common.registry import STAGE_COUNTER_FILTER
from functions.common.rules import TOPIC_THING

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
# How often the local SageMaker looks for jobs the retrain function started.
TRAINING_POLL_SECONDS = 0.5


class TrainingJobSource(Protocol):
    """The local SageMaker and the rule to the completion function (PackagedStack)."""

    def training_pending(self) -> bool: ...

    def finish_training_jobs(self) -> list[Any]: ...


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


RuleAction = Callable[[dict[str, Any]], object]
Select = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    """An IoT topic rule: its name, its FROM topic filter, its action and, when its SQL
    is read from the template, its SELECT (else `SELECT *, topic(3) AS topic_thing`)."""

    name: str
    topic_filter: str
    action: RuleAction
    select: Select | None = None


# Where the agents' stand-in for lifecycle events arrives (`[broker] presence_will`).
PRESENCE_STAND_IN = "edgeloop/things/+/presence"
PRESENCE_EMULATED = (
    "IoT Core's lifecycle events are emulated: a device's connect and disconnect are "
    "what its agent says on edgeloop/things/{thing}/presence (a 'connected' at connect, "
    "a last will the broker publishes when the connection dies unannounced, a "
    "'disconnected' before a clean disconnect); the broker's own view of its clients "
    "is not read, and an agent without [broker] presence_will = true has no presence"
)


class LifecycleEmulator:
    """IoT Core's `$aws/events/presence/...` events from the agents' stand-in messages.

    The time is when the stand-in reached the rules engine, as IoT Core stamps an
    event when its broker sees the connection change; the version number counts a
    client's connects, and a disconnect carries its connection's number."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()

    def event(self, client_id: str, payload: bytes) -> tuple[str, dict[str, Any]]:
        """The lifecycle topic and event; PresenceMessageInvalid for a bad stand-in."""
        message = parse_presence_message(payload)
        with self._lock:
            if message.event_type == CONNECTED:
                self._versions[client_id] = self._versions.get(client_id, 0) + 1
            version = self._versions.get(client_id, 0)
        event: dict[str, Any] = {
            "clientId": client_id,
            "timestamp": int(self._clock() * 1000),
            "eventType": message.event_type,
            "sessionIdentifier": f"{client_id}-{version}",
            "principalIdentifier": "local",
            "versionNumber": version,
        }
        if message.reason is not None:
            event["disconnectReason"] = message.reason
            event["clientInitiatedDisconnect"] = message.reason == CLEAN
        return lifecycle_topic(message.event_type, client_id), event


# Lambda retries a failed asynchronous invocation twice; locally the pauses are short.
ASYNC_RETRY_PAUSES = (1.0, 2.0)
# Lambda polls a stream's shards four times a second. Each poll of moto's stream keeps
# a shard iterator in moto's memory for good (about 1 KB); at this rate a day of
# `edgeloop local up` keeps about 350 MB, a demo or a test run a few hundred KB.
STREAM_POLL_SECONDS = 0.25
# The stack's stream event source: a 1 s batching window, two retries of a failed batch.
STREAM_BATCHING_WINDOW = 1.0
STREAM_RETRIES = 2


class IotRules:
    """What IoT topic rules do, on a plain MQTT broker.

    Each JSON object published on a rule's topic filter goes to the rule's action
    as `SELECT *, topic(3) AS topic_thing` gives it: the payload, plus the thing
    the topic names. A Basic Ingest publish (`$aws/rules/{rule}/{topic}`) goes to
    the rule it names, whatever its FROM filter says, as in AWS, and the thing
    is read from the topic after the prefix; one naming no rule is dropped and
    logged (AWS counts it as RuleNotFound). Actions run on a pool of threads, as
    Lambda scales out; one that raises is recorded in `errors`, like a failed
    invocation.
    """

    def __init__(
        self,
        broker_url: str,
        rules: list[Rule],
        concurrency: int = 8,
        errors: list[str] | None = None,
        lifecycle: LifecycleEmulator | None = None,
    ) -> None:
        self.rules = {rule.name: rule for rule in rules}
        self.lifecycle = lifecycle
        if len(self.rules) != len(rules):
            raise ValueError("two rules with one name: IoT rule names are unique")
        self.errors = [] if errors is None else errors
        self.rules_not_found = 0
        self._pending: queue.Queue[tuple[RuleAction, dict[str, Any]]] = queue.Queue()
        self._stop = threading.Event()
        self._outstanding = 0  # routed and not yet finished, queued or running
        self._lock = threading.Lock()
        self._mqtt, host, port = cloud_client(broker_url, f"edgeloop-rules-{uuid.uuid4().hex[:6]}")
        self._mqtt.on_connect = self._subscribe
        self._mqtt.on_subscribe = self._subscribed
        self._mqtt.on_message = self._route
        self._ready = threading.Event()
        # The rules engine in AWS never loses its subscriptions; after a broker
        # restart this one should be back as soon as the broker is.
        self._mqtt.reconnect_delay_set(1, 2)
        self._mqtt.connect(host, port)
        self._threads = [
            threading.Thread(target=self._run, name=f"rules-{i}", daemon=True)
            for i in range(concurrency)
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

    def busy(self) -> bool:
        """Whether a message is waiting for its action or an action is running."""
        with self._lock:
            return self._outstanding > 0

    def _subscribe(self, client: mqtt.Client, *_: Any) -> None:
        # Wildcards never match topics that start with '$', so Basic Ingest needs a
        # subscription of its own.
        filters = {
            rule.topic_filter
            for rule in self.rules.values()
            if not rule.topic_filter.startswith(LIFECYCLE_PREFIX)  # no broker publishes them
        } | {f"{INGEST_PREFIX}#"}
        if self.lifecycle is not None:
            filters.add(PRESENCE_STAND_IN)
        client.subscribe([(topic_filter, 1) for topic_filter in sorted(filters)])

    def _subscribed(self, *_: Any) -> None:
        self._ready.set()

    def wait_ready(self, timeout: float) -> bool:
        """Whether the rules listen: a publish before that reaches no rule."""
        return self._ready.wait(timeout)

    def _route(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self.lifecycle is not None and mqtt.topic_matches_sub(PRESENCE_STAND_IN, message.topic):
            self._route_lifecycle(message.topic.split("/")[2], bytes(message.payload))
            return
        rule = self._rule_for(message.topic)
        if rule is None:
            return
        thing = thing_of(message.topic)
        try:
            payload = json.loads(message.payload)
        except ValueError:
            return  # IoT rules drop payloads that are not JSON, too
        if thing is None or not isinstance(payload, dict):
            return
        # The topic's thing is added, the payload kept; a rule read from the template
        # selects what its SQL says.
        self._enqueue(rule, payload if rule.select else {**payload, TOPIC_THING: thing})

    def _enqueue(self, rule: Rule, event: dict[str, Any]) -> None:
        with self._lock:
            self._outstanding += 1
        self._pending.put((rule.action, rule.select(event) if rule.select else event))

    def _route_lifecycle(self, client_id: str, payload: bytes) -> None:
        assert self.lifecycle is not None
        try:
            topic, event = self.lifecycle.event(client_id, payload)
        except PresenceMessageInvalid as exc:
            log.warning("event=presence_stand_in_refused client=%s reason=%r", client_id, str(exc))
            return
        for rule in self.rules.values():
            if mqtt.topic_matches_sub(rule.topic_filter, topic):
                self._enqueue(rule, event)

    def _rule_for(self, topic: str) -> Rule | None:
        ingest = parse_ingest(topic)
        if ingest is not None:
            rule = self.rules.get(ingest.rule)
            if rule is None:
                self.rules_not_found += 1
                log.warning("event=rule_not_found rule=%s topic=%s", ingest.rule, topic)
            return rule
        if topic.startswith(INGEST_PREFIX):
            log.warning("event=rule_not_found topic=%s reason=malformed", topic)
            self.rules_not_found += 1
            return None
        for rule in self.rules.values():
            if mqtt.topic_matches_sub(rule.topic_filter, topic):
                return rule
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                action, event = self._pending.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._invoke(action, event)
            finally:
                with self._lock:
                    self._outstanding -= 1

    def _invoke(self, action: RuleAction, event: dict[str, Any]) -> None:
        """As Lambda does with an IoT rule's asynchronous invocation: a function error is
        retried twice, after a pause (a minute, then two, in AWS; seconds here), and only
        the last failure is an error. A device sends an update's outcome once, so one
        failed status call under load would otherwise leave a stage waiting."""
        for attempt, pause in enumerate((*ASYNC_RETRY_PAUSES, None)):
            try:
                action(event)
                return
            except Exception as exc:  # a failed invocation: retried, then recorded
                failure = f"rule action: {type(exc).__name__}: {exc}"
                if pause is None or self._stop.is_set():
                    self.errors.append(failure)
                    return
                log.warning(
                    "event=rule_action_failed attempt=%d retry_in=%.0fs %s",
                    attempt + 1,
                    pause,
                    failure,
                )
                self._stop.wait(pause)


def _drop(event: dict[str, Any]) -> None:
    """A rule whose action is switched off."""


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
        stack_name: str = DEFAULT_STACK,
        streams: Any = None,
        registry_stream_arn: str | None = None,
        stream_batching_window: float = STREAM_BATCHING_WINDOW,
        template_rules: list[Rule] | None = None,
        training_jobs: TrainingJobSource | None = None,
    ) -> None:
        """`template_rules`: the rules read whole from the synthesized template (those
        writing to DynamoDB); with any, lifecycle events are emulated for them."""
        self.sqs, self.queue_url, self.queue_arn = sqs, queue_url, queue_arn
        self.handlers = handlers
        self.batching_window, self.batch_size = batching_window, batch_size
        self.schedule_seconds = schedule_seconds
        self.stream_batching_window = stream_batching_window
        self.retrain_invocations = 0
        self.stream_invocations = 0
        self.errors: list[str] = []
        names = RuleNames(stack_name)
        rules = [
            Rule(
                names.upload_requests,
                "edgeloop/things/+/upload/request",
                lambda event: self._invoke("presign", event),
            ),
            # Without the status function (the soak), the rule still exists, as a
            # deployed stack's would, and drops what it gets.
            Rule(
                names.status,
                "edgeloop/things/+/status",
                (lambda event: self._invoke("status", event)) if status_rule else _drop,
            ),
        ]
        rules.extend(template_rules or [])
        lifecycle = (
            LifecycleEmulator()
            if any(r.topic_filter.startswith(LIFECYCLE_PREFIX) for r in rules)
            else None
        )
        if lifecycle is not None:
            log.info("event=presence_emulated %s", PRESENCE_EMULATED)
        self.rules = IotRules(broker_url, rules, rule_concurrency, self.errors, lifecycle)
        self._stop = threading.Event()
        # One lock per event source: like separate Lambda functions, a long retrain
        # does not hold up upload requests or status reports.
        self._busy = {
            "sqs": threading.Lock(),
            "schedule": threading.Lock(),
            "stream": threading.Lock(),
            "training": threading.Lock(),
        }
        # The SQS source stays at concurrency 1 here (the stack caps retrain at 2).
        self._threads = [
            threading.Thread(target=self._poll_queue, name="router-sqs", daemon=True),
            threading.Thread(target=self._schedule, name="router-schedule", daemon=True),
        ]
        # Opened before anything starts, at the stream's end, as the stack's mapping
        # starts at LATEST: counted outcomes from here on reach the schedule function.
        self._stream = (
            StreamReader(streams, registry_stream_arn)
            if streams is not None and registry_stream_arn is not None
            else None
        )
        if self._stream is not None:
            self._threads.append(
                threading.Thread(target=self._poll_stream, name="router-stream", daemon=True)
            )
        self.training_jobs = training_jobs
        if training_jobs is not None:
            self._threads.append(
                threading.Thread(target=self._run_training, name="router-training", daemon=True)
            )

    def start(self) -> None:
        self.rules.start()
        # A device's first report must not arrive before anything listens for it.
        if not self.rules.wait_ready(10):
            raise TimeoutError("the local IoT rules did not subscribe to the broker within 10 s")
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.rules.stop()
        for thread in self._threads:
            thread.join(10)

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

    # --- the registry's stream ---------------------------------------------------------

    def _counted(self) -> list[dict[str, Any]]:
        """What the stack's filter passes of the records written since the last read."""
        assert self._stream is not None
        try:
            records = self._stream.read()
        except (BotoCoreError, ClientError) as exc:
            self.errors.append(f"stream read: {type(exc).__name__}: {exc}")
            return []
        return [r for r in records if passes(STAGE_COUNTER_FILTER, r)]

    def _poll_stream(self) -> None:
        """Lambda's DynamoDB event source: poll, filter, gather for the batching window from
        the first record that passes, invoke; retry a failed batch, then drop it (the
        schedule evaluates every model anyway)."""
        while not self._stop.wait(STREAM_POLL_SECONDS):
            batch = self._counted()
            if not batch:
                continue
            with self._busy["stream"]:
                deadline = time.monotonic() + self.stream_batching_window
                while time.monotonic() < deadline and not self._stop.is_set():
                    self._stop.wait(min(STREAM_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
                    batch.extend(self._counted())
                self.stream_invocations += 1
                for attempt in range(STREAM_RETRIES + 1):
                    failure = self._try("evaluate_rollouts", stream_event(batch))
                    if failure is None:
                        break
                    if attempt == STREAM_RETRIES or self._stop.is_set():
                        self.errors.append(failure)
                        break
                    log.warning("event=stream_batch_failed attempt=%d %s", attempt + 1, failure)

    def _try(self, name: str, event: dict[str, Any]) -> str | None:
        """Invoke a handler; the failure as text, or None when it returned."""
        try:
            self.handlers[name](event, LocalContext(f"edgeloop-{name}"))
        except Exception as exc:  # a failed invocation: its source decides what follows
            return f"{name}: {type(exc).__name__}: {exc}"
        return None

    def _invoke(self, name: str, event: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return self.handlers[name](event, LocalContext(f"edgeloop-{name}"))
        except Exception as exc:  # a Lambda invocation that raised: logged, retried by its source
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            return None

    # --- SageMaker training jobs and their state-change rule ------------------------------

    def _run_training(self) -> None:
        """Each job the retrain function started runs to its end, one at a time, and its
        state change reaches the completion function (what SageMaker and the rule do)."""
        assert self.training_jobs is not None
        while not self._stop.wait(TRAINING_POLL_SECONDS):
            with self._busy["training"]:
                try:
                    self.training_jobs.finish_training_jobs()
                except Exception as exc:  # a failed delivery: logged, as EventBridge's would be
                    self.errors.append(f"training_done: {type(exc).__name__}: {exc}")

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
        if self.rules.busy() or self.queue_depth():
            return False
        if self.training_jobs is not None and self.training_jobs.training_pending():
            return False
        for source in ("sqs", "stream", "training"):
            if not self._busy[source].acquire(blocking=False):
                return False
            self._busy[source].release()
        return not self.rules.busy() and self.queue_depth() == 0
