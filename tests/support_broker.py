"""A real MQTT broker on loopback: mosquitto when installed, else amqtt embedded."""

from __future__ import annotations

import os
import shutil

from edgeloop.local.broker import EmbeddedBroker, MosquittoBroker

# The local runtime's brokers, under the names the tests use.
EmbeddedAmqtt = EmbeddedBroker
Mosquitto = MosquittoBroker


def start_broker(kind: str | None = None) -> MosquittoBroker | EmbeddedBroker:
    kind = (
        kind
        or os.environ.get("EDGELOOP_TEST_BROKER")
        or ("mosquitto" if shutil.which("mosquitto") else "amqtt")
    )
    return Mosquitto() if kind == "mosquitto" else EmbeddedBroker()
