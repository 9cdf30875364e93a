"""A Publisher over a plain MQTT connection, for the local runtime's broker."""

from __future__ import annotations

import secrets
import threading
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from functions.common.publisher import Publisher


def cloud_client(url: str, client_id: str) -> tuple[mqtt.Client, str, int]:
    """A client for the local cloud's own listener, `mqtt://[user:password@]host:port`
    (the identity-enforcing local broker lets the cloud's services in by password),
    and the host and port to connect it to."""
    parsed = urlparse(url)
    if parsed.scheme != "mqtt" or not parsed.hostname:
        raise ValueError(f"broker URL {url!r} must look like mqtt://[user:password@]host:port")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if parsed.username:
        client.username_pw_set(unquote(parsed.username), unquote(parsed.password or ""))
    return client, parsed.hostname, parsed.port or 1883


class MqttPublisher(Publisher):
    def __init__(self, url: str, client_id: str | None = None) -> None:
        # Each publisher needs its own client id: a broker drops the older of two equal ones.
        client_id = client_id or f"edgeloop-cloud-{secrets.token_hex(4)}"
        self._client, host, port = cloud_client(url, client_id)
        self._connected = threading.Event()
        self._client.on_connect = lambda *_: self._connected.set()
        self._client.connect(host, port)
        self._client.loop_start()
        if not self._connected.wait(10):
            self._client.loop_stop()
            raise ConnectionError(f"no MQTT connection to {host}:{port} within 10 s")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        if not info.is_published():
            raise ConnectionError(f"publish to {topic} was not acknowledged within 10 s")

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
