"""Publishing MQTT messages from the cloud side, behind one interface.

In AWS the IoT data plane publishes; in the local runtime a real MQTT client
publishes to the embedded broker. Handlers do not know which.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Publisher(ABC):
    @abstractmethod
    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1."""


class IotDataPublisher(Publisher):
    def __init__(self, iot_data_client: Any) -> None:
        self._client = iot_data_client

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self._client.publish(topic=topic, qos=1, retain=retain, payload=payload)
