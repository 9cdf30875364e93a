"""Who a device is, from the cloud's own records: never from anything the device says.

A device's model and whether it is a named canary come from the IoT thing
registry: the thing's `model` attribute, and membership of the canary thing
group. Presign grants uploads only under the thing's own model; status reports
count only toward the rollout stage the registry and the thing's name put it in
(edgeloop.contract.stages). Both ask here, so there is one
answer to "who is this device".

Lookups are cached per cold start for a few minutes: a device reports far more
often than its enrolment changes, and the registry's API has a rate limit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import ClientError

MODEL_ATTRIBUTE = "model"
CACHE_SECONDS = 300.0
CACHE_ENTRIES = 100_000


class UnknownDevice(LookupError):
    """The thing is not enrolled, or has no model: nothing it sends is acted on."""


@dataclass(frozen=True)
class DeviceIdentity:
    thing: str
    model: str
    canary: bool  # a named canary: the canary thing group's member, stage 0 of every rollout


class FleetIdentity(Protocol):
    def of(self, thing: str) -> DeviceIdentity:
        """The device's identity, or UnknownDevice."""
        ...


class ThingRegistryIdentity:
    """IoT Core's thing registry (moto's in the local stack)."""

    def __init__(
        self,
        iot_client: Any,
        canary_group: str,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._iot = iot_client
        self._canary_group = canary_group
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, DeviceIdentity]] = {}
        self._lock = threading.Lock()
        self.lookups = 0  # registry reads made, for the cost figures

    def of(self, thing: str) -> DeviceIdentity:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(thing)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        identity = self._look_up(thing)
        with self._lock:
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.clear()  # bounded memory; the next lookups refill it
            self._cache[thing] = (now, identity)
        return identity

    def _look_up(self, thing: str) -> DeviceIdentity:
        self.lookups += 1
        try:
            attributes = self._iot.describe_thing(thingName=thing).get("attributes") or {}
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                raise UnknownDevice(
                    f"thing {thing!r} is not enrolled in this fleet's registry"
                ) from exc
            raise
        model = attributes.get(MODEL_ATTRIBUTE)
        if not model:
            raise UnknownDevice(
                f"thing {thing!r} has no {MODEL_ATTRIBUTE!r} attribute; enrol it with "
                f"attribute {MODEL_ATTRIBUTE}=<model name>"
            )
        groups = self._iot.list_thing_groups_for_thing(thingName=thing).get("thingGroups", [])
        canary = any(g.get("groupName") == self._canary_group for g in groups)
        return DeviceIdentity(thing, str(model), canary)


def named_canaries(iot_client: Any, canary_group: str) -> list[str]:
    """Every member of the canary thing group (a few devices, by design)."""
    things: list[str] = []
    kwargs: dict[str, Any] = {"thingGroupName": canary_group}
    while True:
        try:
            page = iot_client.list_things_in_thing_group(**kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return []
            raise
        things.extend(page.get("things", []))
        if not page.get("nextToken"):
            return sorted(things)
        kwargs["nextToken"] = page["nextToken"]


def enroll(iot_client: Any, thing: str, model: str, canary_group: str | None = None) -> None:
    """Register a thing with its model (and canary membership), as the platform team does."""
    iot_client.create_thing(
        thingName=thing, attributePayload={"attributes": {MODEL_ATTRIBUTE: model}, "merge": True}
    )
    if canary_group is not None:
        try:
            iot_client.create_thing_group(thingGroupName=canary_group)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                raise
        iot_client.add_thing_to_thing_group(thingGroupName=canary_group, thingName=thing)
