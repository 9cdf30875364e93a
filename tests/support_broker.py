"""A real MQTT broker on loopback: mosquitto when installed, else amqtt embedded."""

from __future__ import annotations

import os
import shutil

from edgeloop.local.broker import EmbeddedBroker, Mosquitto

# The local runtime's embedded broker, under the name the tests use.
EmbeddedAmqtt = EmbeddedBroker

__all__ = ["EmbeddedAmqtt", "Mosquitto", "start_broker"]


def start_broker(kind: str | None = None) -> Mosquitto | EmbeddedBroker:
    kind = (
        kind
        or os.environ.get("EDGELOOP_TEST_BROKER")
        or ("mosquitto" if shutil.which("mosquitto") else "amqtt")
    )
    return Mosquitto() if kind == "mosquitto" else EmbeddedBroker()
