"""The agent's MQTT connection: persistent session, QoS 1, reconnects with backoff and jitter.

The link owns reconnecting. The agent reacts to its callbacks (connected,
nudge, upload answer) and never polls the connection.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.backoff import Backoff
from edge.config import BrokerSection
from edge.errors import AgentConfigError, UploadFailed
from edge.tls import broker_tls
from edgeloop.contract import (
    RuleNames,
    ThingTopics,
    UploadAnswer,
    UploadMessageInvalid,
    UploadRequest,
    announcement,
    band_of,
    ingest_topic,
    parse_upload_answer,
)
from edgeloop.contract.presence import CLEAN, CONNECTED, DISCONNECTED, LOST, presence_message

log = logging.getLogger(__name__)

# A connection that lasted this long resets the backoff to its minimum.
STABLE_SECONDS = 30.0


class Link:
    def __init__(
        self,
        broker: BrokerSection,
        thing: str,
        model: str,
        on_nudge: Callable[[bytes], None],
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self.broker = broker
        self.topics = ThingTopics(thing)
        # What only a rule consumes is published to the rule by name (Basic Ingest);
        # alarm events stay on the broker, where whoever watches them subscribes.
        if broker.basic_ingest:
            rules = RuleNames(broker.stack_name)
            self.status_topic = ingest_topic(rules.status, self.topics.status)
            self.upload_request_topic = ingest_topic(
                rules.upload_requests, self.topics.upload_request
            )
        else:
            self.status_topic = self.topics.status
            self.upload_request_topic = self.topics.upload_request
        # The device is nudged to refresh on two retained topics: its 1% band's (the
        # stage that covers the band publishes there) and its own, where a named
        # canary hears first. Which band is fixed by the thing name. A nudge is never
        # the authority: the signed rollout pointer says what this thing runs.
        self.nudges = (announcement(model, band_of(thing)), self.topics.nudge)
        self._on_nudge = on_nudge
        self._on_connected = on_connected
        # A fixed client id and clean_session=False: the broker keeps our
        # subscriptions and queued QoS 1 messages while we are away.
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=thing,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        if broker.tls:
            if broker.cert is None or broker.key is None:
                raise AgentConfigError("broker: no device certificate yet: provision first")
            self._client.tls_set_context(broker_tls(broker, broker.cert, broker.key))
        if broker.presence_will:
            self._client.will_set(self.topics.presence, presence_message(DISCONNECTED, LOST), qos=1)
        self._client.on_connect = self._connected
        self._client.on_message = self._message
        self._client.on_disconnect = self._disconnected
        # paho says why a socket failed only in its log: kept, so a connection the
        # broker drops before CONNACK (a client certificate it does not accept) is
        # not retried for ever in silence.
        self._client.on_log = self._paho_log
        self._socket_error = ""
        self._stop = threading.Event()
        self._is_connected = threading.Event()
        # Only answers to requests this agent made and still waits for are kept:
        # anything else on the topic is dropped, so the map cannot grow.
        self._waiting: set[str] = set()
        self._answers: dict[str, UploadAnswer] = {}
        self._answer_ready = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{thing}", daemon=True)
        self.connections = 0

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        # Already gone is fine: stopping is all that is wanted (paho raises RuntimeError
        # from wait_for_publish when the connection has just dropped).
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            if self.broker.presence_will and self.connected:
                # A clean disconnect drops the will: say it, as IoT Core would.
                self._client.publish(
                    self.topics.presence, presence_message(DISCONNECTED, CLEAN), qos=1
                ).wait_for_publish(2)
            self._client.disconnect()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)

    @property
    def connected(self) -> bool:
        return self._is_connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._is_connected.wait(timeout)

    def _run(self) -> None:
        backoff = Backoff(self.broker.reconnect_min, self.broker.reconnect_max)
        while not self._stop.is_set():
            self._socket_error = ""
            try:
                self._client.connect(
                    self.broker.host, self.broker.port, keepalive=self.broker.keepalive
                )
            except (OSError, ssl.SSLError) as exc:
                pause = backoff.next()
                log.warning(
                    "event=connect_failed broker=%s reason=%r retry_in=%.1fs",
                    self.broker.url,
                    str(exc),
                    pause,
                )
                self._stop.wait(pause)
                continue
            started = time.monotonic()
            connections = self.connections
            while not self._stop.is_set():
                # paho wakes the select itself when another thread publishes, so a long
                # timeout costs nothing but keeps an idle agent from spinning.
                if self._client.loop(timeout=1.0) != mqtt.MQTT_ERR_SUCCESS:
                    break
            self._is_connected.clear()
            if time.monotonic() - started > STABLE_SECONDS:
                backoff.reset()
            if not self._stop.is_set():
                pause = backoff.next()
                if connections == self.connections:
                    self._dropped_before_connack(pause)
                else:
                    log.info("event=reconnecting broker=%s retry_in=%.1fs", self.broker.url, pause)
                self._stop.wait(pause)

    def _dropped_before_connack(self, pause: float) -> None:
        """The broker closed the connection before accepting it: say why, and what to do."""
        reason = self._socket_error or "closed by the broker"
        hint = ""
        if self.broker.cert is not None:
            # Dropped before CONNACK with a client certificate: the broker did not take
            # the certificate, or the identity behind it. Its reason is not sent back.
            hint = (
                ": most often the broker does not accept this device's certificate "
                "(issued by another cloud's CA, revoked, or its thing's policy refuses "
                "it); a device provisioned by an earlier local cloud: remove its state "
                "directory's identity/ to provision again"
            )
        log.warning(
            "event=connection_refused broker=%s reason=%r retry_in=%.1fs%s",
            self.broker.url,
            reason,
            pause,
            hint,
        )

    # --- callbacks -------------------------------------------------------------------

    def _paho_log(self, client: mqtt.Client, userdata: Any, level: int, text: str) -> None:
        # The first error of a connection is the cause; later ones are its echoes.
        if level == mqtt.MQTT_LOG_ERR and not self._socket_error:
            self._socket_error = text

    def _connected(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any = None
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("event=connect_refused broker=%s reason=%r", self.broker.url, str(reason))
            return
        log.info("event=connected broker=%s thing=%s", self.broker.url, self.topics.thing)
        client.subscribe([*((t, 1) for t in self.nudges), (self.topics.upload_response, 1)])
        if self.broker.presence_will:
            client.publish(self.topics.presence, presence_message(CONNECTED), qos=1)
        self.connections += 1
        self._is_connected.set()
        if self._on_connected is not None:
            self._on_connected()

    def _disconnected(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any = None
    ) -> None:
        was_connected = self._is_connected.is_set()
        self._is_connected.clear()
        if was_connected and not self._stop.is_set():
            log.warning("event=disconnected broker=%s reason=%r", self.broker.url, str(reason))

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # paho re-raises a callback's exception out of its loop: one bad message
        # would end the connection thread.
        try:
            self._dispatch(message)
        except Exception:
            log.exception("event=message_failed topic=%s", message.topic)

    def _dispatch(self, message: mqtt.MQTTMessage) -> None:
        if message.topic in self.nudges:
            # Whatever it says (even nothing): it only asks for a refresh.
            self._on_nudge(bytes(message.payload))
        elif message.topic == self.topics.upload_response:
            try:
                answer = parse_upload_answer(bytes(message.payload))
            except UploadMessageInvalid:
                return  # not ours to interpret; the request will time out and retry
            if answer.request_id is None:
                return  # a refusal of a request too broken to name; ours always name one
            with self._answer_ready:
                if answer.request_id not in self._waiting:
                    return  # unsolicited, or answered after we gave up on it
                self._answers[answer.request_id] = answer
                self._answer_ready.notify_all()

    # --- publishing ------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1; paho queues it while disconnected and sends it on reconnect."""
        self._client.publish(topic, payload, qos=1)

    def request_upload_url(
        self, model: str, content_type: str, size: int, timeout: float, batch_id: str | None = None
    ) -> UploadAnswer:
        if not self.connected:
            raise UploadFailed("not connected to the broker")
        request_id = secrets.token_hex(8)
        request = UploadRequest(request_id, model, content_type, size, batch_id)
        with self._answer_ready:
            self._waiting.add(request_id)
        try:
            self.publish(self.upload_request_topic, request.to_bytes())
            deadline = time.monotonic() + timeout
            with self._answer_ready:
                while request_id not in self._answers:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise UploadFailed(
                            f"no answer to upload request {request_id} within {timeout} s"
                        )
                    self._answer_ready.wait(remaining)
                return self._answers.pop(request_id)
        finally:
            with self._answer_ready:
                self._waiting.discard(request_id)
                self._answers.pop(request_id, None)
