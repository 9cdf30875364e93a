"""A Publisher over a plain MQTT connection, for the local runtime's embedded broker."""

from __future__ import annotations

import secrets
import threading
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from functions.common.publisher import Publisher


class MqttPublisher(Publisher):
    def __init__(self, url: str, client_id: str | None = None) -> None:
        # Each publisher needs its own client id: a broker drops the older of two equal ones.
        client_id = client_id or f"edgeloop-cloud-{secrets.token_hex(4)}"
        parsed = urlparse(url)
        if parsed.scheme != "mqtt" or not parsed.hostname:
            raise ValueError(f"broker URL {url!r} must look like mqtt://host:port")
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._connected = threading.Event()
        self._client.on_connect = lambda *_: self._connected.set()
        self._client.connect(parsed.hostname, parsed.port or 1883)
        self._client.loop_start()
        if not self._connected.wait(10):
            self._client.loop_stop()
            raise ConnectionError(f"no MQTT connection to {url} within 10 s")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        if not info.is_published():
            raise ConnectionError(f"publish to {topic} was not acknowledged within 10 s")

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
