"""Who a device is, from the cloud's own records: never from anything the device says.

A device's model and whether it is a named canary come from the IoT thing
registry: the thing's `model` attribute (`MODEL_ATTRIBUTE`, which the device
policy's nudge grant reads too, so a device hears only its own model's
rollouts), and membership of the canary thing group. Presign grants uploads
only under the thing's own model; status reports count only toward the rollout
stage the registry and the thing's name put it in (edgeloop.contract.stages).
Both ask here, so there is one answer to "who is this device".

Lookups are cached per cold start for a few minutes, and for longer in the
device's own fleet item (`RecordedIdentity`): a device reports far more often
than its enrolment changes, the registry's API has a rate limit, and each
lookup is two billed registry operations, where reading the fleet item is half
a read unit. A report whose model disagrees with the recorded answer is looked
up afresh before it is refused, so re-enrolling a device takes effect at once
for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from botocore.exceptions import ClientError

from edgeloop.contract import format_time, parse_time, utc_now
from edgeloop.contract.device_policy import MODEL_ATTRIBUTE as MODEL_ATTRIBUTE
from functions.common.fleet import FleetTable

CACHE_SECONDS = 300.0
CACHE_ENTRIES = 100_000


class UnknownDevice(LookupError):
    """The thing is not enrolled, or has no model: nothing it sends is acted on."""


@dataclass(frozen=True)
class DeviceIdentity:
    thing: str
    model: str
    canary: bool  # a named canary: the canary thing group's member, stage 0 of every rollout
    checked_at: str = ""  # when the thing registry said so (UTC); "" for just now


class FleetIdentity(Protocol):
    def of(self, thing: str, claimed_model: str | None = None) -> DeviceIdentity:
        """The device's identity, or UnknownDevice. `claimed_model`, what the device
        says its model is, only decides whether a cached answer is worth re-checking."""
        ...


class RecordedIdentity:
    """The registry's answer as the device's fleet item recorded it, while fresh.

    The status function writes the answer it used into the item with every
    report (`functions.common.fleet`), so the cache costs no write of its own.
    """

    def __init__(
        self,
        fleet: FleetTable,
        registry: FleetIdentity,
        ttl: timedelta,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._fleet = fleet
        self._registry = registry
        self._ttl = ttl
        self._clock = clock

    def of(self, thing: str, claimed_model: str | None = None) -> DeviceIdentity:
        now = self._clock()
        recorded = self._fleet.recorded_identity(thing)
        if (
            recorded is not None
            and now - parse_time(recorded.checked_at) < self._ttl
            and (claimed_model is None or claimed_model == recorded.model)
        ):
            return DeviceIdentity(thing, recorded.model, recorded.canary, recorded.checked_at)
        found = self._registry.of(thing, claimed_model)
        return replace(found, checked_at=format_time(now))


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

    def of(self, thing: str, claimed_model: str | None = None) -> DeviceIdentity:
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
