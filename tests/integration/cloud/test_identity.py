"""A device's model and canary membership come from the IoT thing registry (moto's, over HTTP)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from edgeloop.contract import Health, StatusReport, format_time
from functions.common.fleet import DeviceRecord, FleetTable, fleet_table_spec
from functions.common.identity import (
    RecordedIdentity,
    ThingRegistryIdentity,
    UnknownDevice,
    enroll,
    named_canaries,
)


@pytest.fixture
def iot(moto_endpoint: str) -> object:
    return boto3.client("iot", endpoint_url=moto_endpoint, region_name="eu-west-1")


def test_the_registry_names_the_model_and_the_named_canaries(iot: object) -> None:
    group = f"canary-{uuid.uuid4().hex[:6]}"
    enroll(iot, "pump-1", "vibration", canary_group=group)
    enroll(iot, "pump-2", "vibration")
    identity = ThingRegistryIdentity(iot, group)
    assert identity.of("pump-1").model == "vibration"
    assert identity.of("pump-1").canary is True
    assert identity.of("pump-2").canary is False
    assert named_canaries(iot, group) == ["pump-1"]
    assert named_canaries(iot, f"no-such-group-{uuid.uuid4().hex[:6]}") == []


def test_an_unenrolled_thing_or_one_without_a_model_is_unknown(iot: object) -> None:
    identity = ThingRegistryIdentity(iot, "canary")
    with pytest.raises(UnknownDevice, match="not enrolled"):
        identity.of(f"ghost-{uuid.uuid4().hex[:6]}")
    bare = f"bare-{uuid.uuid4().hex[:6]}"
    iot.create_thing(thingName=bare)  # type: ignore[attr-defined]
    with pytest.raises(UnknownDevice, match="no 'model' attribute"):
        identity.of(bare)


def test_lookups_are_cached_for_a_while_and_then_read_again(iot: object) -> None:
    now = [0.0]
    enroll(iot, "pump-9", "digits")
    identity = ThingRegistryIdentity(iot, "canary", cache_seconds=60, clock=lambda: now[0])
    for _ in range(5):
        identity.of("pump-9")
    assert identity.lookups == 1
    now[0] = 61.0
    identity.of("pump-9")
    assert identity.lookups == 2


def test_the_fleet_item_keeps_the_registrys_answer_until_it_is_stale_or_contradicted(
    moto_endpoint: str, iot: object
) -> None:
    """What the status function relies on at fleet scale: one registry lookup per device
    per TTL, not per report; a report naming another model is checked afresh."""
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="eu-west-1")
    table = f"fleet-{uuid.uuid4().hex[:6]}"
    dynamodb.create_table(**fleet_table_spec(table))
    fleet = FleetTable(dynamodb, table)
    thing = f"pump-{uuid.uuid4().hex[:6]}"
    enroll(iot, thing, "vibration")
    registry = ThingRegistryIdentity(iot, "canary", cache_seconds=0)
    now = [datetime(2026, 11, 22, 12, 0, tzinfo=UTC)]
    identity = RecordedIdentity(fleet, registry, timedelta(hours=24), clock=lambda: now[0])

    def report() -> None:
        found = identity.of(thing, "vibration")
        at = format_time(now[0])
        fleet.record(
            DeviceRecord(
                thing,
                at,
                StatusReport("vibration", 1, Health.HEALTHY),
                canary=found.canary,
                identity_checked_at=found.checked_at,
            )
        )

    for _ in range(5):
        report()
        now[0] += timedelta(hours=1)
    assert registry.lookups == 1
    identity.of(thing, "digits")  # contradicts the recorded answer: asked again
    assert registry.lookups == 2
    now[0] += timedelta(hours=24)
    report()
    assert registry.lookups == 3
    fleet.forget_identity(thing)  # re-enrolled: the next report asks again
    report()
    assert registry.lookups == 4
