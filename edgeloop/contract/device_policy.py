"""What a device may do on the broker, as plain data: the one source of the stack's IoT policy.

Each grant names an MQTT action and the client ids, topics or topic filters it
applies to, written with AWS IoT's thing policy variables:
`${iot:Connection.Thing.ThingName}` (the thing the device's certificate is
attached to, which is also its client id) and
`${iot:Connection.Thing.Attributes[model]}` (that thing's `model` attribute in
the registry, the model the cloud enrolled it for). `infra` renders the grants
as IoT policy statements; a local broker's ACL can be generated from the same
grants by substituting the variables per device. Nothing here knows about AWS
SDKs or the CDK.

A device connects only as its own thing, publishes only on its own topics (and
by Basic Ingest to the one rule that consumes each, on its own topic), and hears
only its upload answers, its own nudge and the nudges of its own model's bands:
never another model's rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edgeloop.contract.topics import ROOT, RuleNames, ingest_topic

# The thing registry attribute that says which model a device runs (its enrolment).
MODEL_ATTRIBUTE = "model"

THING_VARIABLE = "${iot:Connection.Thing.ThingName}"
MODEL_VARIABLE = f"${{iot:Connection.Thing.Attributes[{MODEL_ATTRIBUTE}]}}"


class DeviceAction(StrEnum):
    CONNECT = "connect"  # names are client ids
    PUBLISH = "publish"  # names are topics
    SUBSCRIBE = "subscribe"  # names are topic filters
    RECEIVE = "receive"  # names are topics


@dataclass(frozen=True)
class DeviceGrant:
    action: DeviceAction
    names: tuple[str, ...]
    # Only a client whose certificate is attached to the thing it connects as.
    attached_thing_only: bool = False


def own_topics() -> str:
    """The device's own topic prefix, with the thing name as a policy variable."""
    return f"{ROOT}/things/{THING_VARIABLE}"


def model_nudges() -> str:
    """The nudge topics of every 1% band of the device's own model (one name covers the
    hundred bands; `*` is IoT policy's wildcard, never an MQTT filter)."""
    return f"{ROOT}/models/{MODEL_VARIABLE}/bands/*/nudge"


def device_grants(rules: RuleNames) -> tuple[DeviceGrant, ...]:
    """Everything a device may do, and nothing else.

    Status reports and upload requests may also go by Basic Ingest, to the one rule
    that consumes each and only on the thing's own topic: the rule's `topic(3)` is
    then the connection's thing name, as on the plain topic. The plain topics stay
    for agents that do not use Basic Ingest yet.
    """
    own = own_topics()
    heard = (f"{own}/upload/response", model_nudges(), f"{own}/nudge")
    return (
        DeviceGrant(DeviceAction.CONNECT, (THING_VARIABLE,), attached_thing_only=True),
        DeviceGrant(
            DeviceAction.PUBLISH,
            (
                f"{own}/upload/request",
                f"{own}/status",
                f"{own}/events",
                ingest_topic(rules.upload_requests, f"{own}/upload/request"),
                ingest_topic(rules.status, f"{own}/status"),
            ),
        ),
        DeviceGrant(DeviceAction.SUBSCRIBE, heard),
        DeviceGrant(DeviceAction.RECEIVE, heard),
    )
