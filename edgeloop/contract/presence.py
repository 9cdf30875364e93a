"""Presence: IoT Core's lifecycle event types, and the stand-in an agent publishes for a
broker that has none (its "connected" at connect, its last will for a lost connection)."""

from __future__ import annotations

import json
from dataclasses import dataclass

CONNECTED = "connected"
DISCONNECTED = "disconnected"
EVENT_TYPES = (CONNECTED, DISCONNECTED)
# IoT Core's disconnectReason values these stand-ins can mean: a DISCONNECT packet,
# and a connection the broker found dead (a socket error or keep-alive timeout; a
# will cannot tell the two apart).
CLEAN = "CLIENT_INITIATED_DISCONNECT"
LOST = "CONNECTION_LOST"
REASONS = (CLEAN, LOST)
# IoT Core's lifecycle topics: `$aws/events/presence/{eventType}/{clientId}`.
LIFECYCLE_PREFIX = "$aws/events/presence"


class PresenceMessageInvalid(ValueError):
    """A message on a presence topic that is not one the agent sends."""


@dataclass(frozen=True)
class PresenceMessage:
    event_type: str
    reason: str | None = None


def presence_message(event_type: str, reason: str | None = None) -> bytes:
    body: dict[str, str] = {"eventType": event_type}
    if reason is not None:
        body["disconnectReason"] = reason
    return json.dumps(body, separators=(",", ":")).encode()


def parse_presence_message(payload: bytes) -> PresenceMessage:
    try:
        doc = json.loads(payload)
    except ValueError as exc:
        raise PresenceMessageInvalid(f"presence message is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or set(doc) - {"eventType", "disconnectReason"}:
        raise PresenceMessageInvalid(f"presence message {doc!r:.80}: unknown fields")
    event_type, reason = doc.get("eventType"), doc.get("disconnectReason")
    if event_type not in EVENT_TYPES:
        raise PresenceMessageInvalid(
            f"presence eventType {event_type!r:.40} is not one of {EVENT_TYPES}"
        )
    if event_type == CONNECTED and reason is not None:
        raise PresenceMessageInvalid("a connected presence message carries no disconnectReason")
    if event_type == DISCONNECTED and reason not in REASONS:
        raise PresenceMessageInvalid(
            f"presence disconnectReason {reason!r:.40} is not one of {REASONS}"
        )
    return PresenceMessage(str(event_type), None if reason is None else str(reason))


def lifecycle_topic(event_type: str, client_id: str) -> str:
    return f"{LIFECYCLE_PREFIX}/{event_type}/{client_id}"
