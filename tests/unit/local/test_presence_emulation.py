"""The local stand-in for IoT Core's lifecycle events, and the rule SQL it can evaluate."""

from __future__ import annotations

import pytest

from edgeloop.contract.presence import (
    CLEAN,
    CONNECTED,
    DISCONNECTED,
    LOST,
    PresenceMessageInvalid,
    presence_message,
)
from edgeloop.local.router import LifecycleEmulator
from edgeloop.local.stack_template import TemplateError, parse_select
from functions.common.presence import presence_sql


def test_events_carry_the_clients_connection_number_and_the_arrival_time() -> None:
    now = [1.0]
    emulator = LifecycleEmulator(clock=lambda: now[0])
    topic, up = emulator.event("pump-1", presence_message(CONNECTED))
    assert topic == "$aws/events/presence/connected/pump-1"
    assert (up["clientId"], up["timestamp"], up["versionNumber"]) == ("pump-1", 1000, 1)
    assert "disconnectReason" not in up
    now[0] = 2.5
    topic, down = emulator.event("pump-1", presence_message(DISCONNECTED, LOST))
    assert topic == "$aws/events/presence/disconnected/pump-1"
    # The disconnect ends connection 1; the next connect is connection 2.
    assert (down["versionNumber"], down["disconnectReason"]) == (1, LOST)
    assert down["clientInitiatedDisconnect"] is False
    assert emulator.event("pump-1", presence_message(CONNECTED))[1]["versionNumber"] == 2
    assert emulator.event("pump-2", presence_message(CONNECTED))[1]["versionNumber"] == 1
    clean = emulator.event("pump-2", presence_message(DISCONNECTED, CLEAN))[1]
    assert clean["clientInitiatedDisconnect"] is True


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"eventType": "subscribed"}',
        b'{"eventType": "disconnected"}',
        b'{"eventType": "disconnected", "disconnectReason": "BECAUSE"}',
        b'{"eventType": "connected", "disconnectReason": "CONNECTION_LOST"}',
        b'{"eventType": "connected", "clientId": "someone-else"}',
    ],
)
def test_a_stand_in_the_agent_never_sends_is_refused(payload: bytes) -> None:
    with pytest.raises(PresenceMessageInvalid):
        LifecycleEmulator().event("pump-1", payload)


def test_the_presence_rules_sql_is_read_and_anything_richer_refused() -> None:
    topic, fields = parse_select(presence_sql())
    assert topic == "$aws/events/presence/+/+"
    assert ("timestamp", "at_ms") in fields
    assert ("clientId", "thing") in fields
    for sql in (
        "SELECT * FROM 'a/b'",
        "SELECT clientId AS thing FROM 'a/+' WHERE eventType = 'connected'",
        "SELECT upper(clientId) AS thing FROM 'a/+'",
    ):
        with pytest.raises(TemplateError, match="cannot"):
            parse_select(sql)
