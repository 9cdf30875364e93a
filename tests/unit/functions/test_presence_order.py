"""A device's presence decided from the latest connect and disconnect, in any arrival order."""

from __future__ import annotations

import pytest

from functions.common.presence import Event, Presence, PresenceUnreadable, _event


def state(up: Event | None, down: Event | None) -> tuple[bool, str | None] | None:
    presence = Presence.decide("pump-1", up, down)
    return None if presence is None else (presence.connected, presence.reason)


def test_the_newer_connection_decides() -> None:
    first_up, first_down = Event(1_000, 1), Event(5_000, 1, "MQTT_KEEP_ALIVE_TIMEOUT")
    second_up = Event(9_000, 2)
    assert Presence.decide("pump-1", first_up, None) == Presence(
        "pump-1", True, "1970-01-01T00:00:01Z"
    )
    assert state(first_up, first_down) == (False, "MQTT_KEEP_ALIVE_TIMEOUT")
    # The disconnect of the first connection delivered after the second connect:
    # the items hold what arrived last, the answer is what happened last.
    assert state(second_up, first_down) == (True, None)


def test_a_disconnect_with_its_connects_time_and_version_wins() -> None:
    assert state(Event(1_000, 3), Event(1_000, 3, "CONNECTION_LOST")) == (
        False,
        "CONNECTION_LOST",
    )


def test_nothing_recorded_is_no_presence() -> None:
    assert state(None, None) is None
    assert state(None, Event(2_000, 1, "CLIENT_INITIATED_DISCONNECT")) == (
        False,
        "CLIENT_INITIATED_DISCONNECT",
    )


def test_an_item_the_rule_did_not_write_is_refused_by_name() -> None:
    with pytest.raises(PresenceUnreadable, match="pump-1"):
        _event({"thing": {"S": "pump-1"}, "event": {"S": "connected"}, "at_ms": {"S": "x"}})
