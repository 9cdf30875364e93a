"""Whether a device is connected, from IoT Core's lifecycle events, written by a rule alone.

AWS IoT Core publishes `$aws/events/presence/connected/{clientId}` and
`.../disconnected/{clientId}` for every client; the device policy makes the client
id the thing name. The stack's presence rule writes each event straight into the
presence table with its DynamoDBv2 action: no Lambda runs per event.

That action is a PutItem of the SELECTed fields, with no condition, so it cannot
keep an older event from overwriting a newer one, and would replace the fleet
item whole if it wrote there. So the presence table keeps one item per thing and
event type (`thing`, `event`), and the reader decides: the device is connected
when its latest `connected` event is newer than its latest `disconnected` one.
An event delivered late (AWS says they may arrive out of order, or twice) then
cannot undo a newer event of the other type; a duplicate writes the same item.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edgeloop.contract import format_time
from edgeloop.contract.presence import CONNECTED, DISCONNECTED, EVENT_TYPES, LIFECYCLE_PREFIX

PRESENCE_TOPICS = f"{LIFECYCLE_PREFIX}/+/+"
EVENTS = EVENT_TYPES

# The fields of a lifecycle event the table keeps, under the names it keeps them:
# the key (thing, event), the event's time in epoch milliseconds, the connection's
# version number (increasing per client id) and, for a disconnect, its reason.
PRESENCE_FIELDS = (
    ("clientId", "thing"),
    ("eventType", "event"),
    ("timestamp", "at_ms"),
    ("versionNumber", "version"),
    ("disconnectReason", "reason"),
)


def presence_sql() -> str:
    fields = ", ".join(f"{source} AS {name}" for source, name in PRESENCE_FIELDS)
    return f"SELECT {fields} FROM '{PRESENCE_TOPICS}'"


class PresenceUnreadable(ValueError):
    """A presence item that is not what the presence rule writes."""


@dataclass(frozen=True)
class Event:
    at_ms: int
    version: int
    reason: str | None = None


@dataclass(frozen=True)
class Presence:
    thing: str
    connected: bool
    since: str  # the deciding event's time (UTC, to the second, as last_seen)
    reason: str | None = None  # why it disconnected, when it did

    @classmethod
    def decide(cls, thing: str, up: Event | None, down: Event | None) -> Presence | None:
        """The newer of the latest connect and the latest disconnect says which.

        Ordered by the connection's version number first: a connect and the
        disconnect that ends it may carry the same time to the millisecond, and
        then the disconnect wins, as it must. Times order events of equal version.
        """
        if up is None and down is None:
            return None
        if down is None or (up is not None and (up.version, up.at_ms) > (down.version, down.at_ms)):
            assert up is not None
            return cls(thing, True, _iso(up.at_ms))
        return cls(thing, False, _iso(down.at_ms), down.reason)


def _iso(at_ms: int) -> str:
    return format_time(datetime.fromtimestamp(at_ms / 1000, UTC))


def _event(item: dict[str, Any]) -> Event:
    try:
        at_ms = int(item["at_ms"]["N"])
        version = int(item.get("version", {}).get("N", "0"))
    except (KeyError, ValueError) as exc:
        raise PresenceUnreadable(f"presence item {item.get('thing')}: {exc!r}") from exc
    reason = item.get("reason", {}).get("S")
    return Event(at_ms, version, reason)


class PresenceTable:
    def __init__(self, dynamodb_client: Any, table: str) -> None:
        self._db = dynamodb_client
        self._table = table

    def of(self, things: Iterable[str]) -> dict[str, Presence]:
        """Each thing's presence, for the things any event was recorded for."""
        wanted = sorted(set(things))
        found: dict[str, dict[str, Event]] = {}
        for start in range(0, len(wanted), 50):  # two keys a thing, BatchGetItem's 100
            keys = [
                {"thing": {"S": t}, "event": {"S": e}}
                for t in wanted[start : start + 50]
                for e in EVENTS
            ]
            while keys:
                response = self._db.batch_get_item(RequestItems={self._table: {"Keys": keys}})
                for item in response["Responses"].get(self._table, []):
                    found.setdefault(item["thing"]["S"], {})[item["event"]["S"]] = _event(item)
                keys = response.get("UnprocessedKeys", {}).get(self._table, {}).get("Keys", [])
        decided = {
            thing: Presence.decide(thing, events.get(CONNECTED), events.get(DISCONNECTED))
            for thing, events in found.items()
        }
        return {thing: p for thing, p in decided.items() if p is not None}
