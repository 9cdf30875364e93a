"""A device's model and canary membership come from the IoT thing registry (moto's, over HTTP)."""

from __future__ import annotations

import uuid

import boto3
import pytest

from functions.common.identity import (
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
