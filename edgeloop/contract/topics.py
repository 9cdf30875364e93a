"""Every MQTT topic of the loop, in one place.

Thing-scoped topics live under `edgeloop/things/{thing}/` so that one IoT
policy statement, keyed on `${iot:Connection.Thing.ThingName}`, pins a device
to its own topics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeloop.contract.stages import BANDS

ROOT = "edgeloop"

# AWS IoT thing names: letters, digits, colon, underscore and hyphen. No slash,
# '+' or '#', so a name can never widen a topic filter.
_THING_RE = re.compile(r"^[A-Za-z0-9:_-]{1,128}$")
_MODEL_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def check_thing_name(thing: str) -> str:
    if not _THING_RE.fullmatch(thing):
        raise ValueError(
            f"thing name {thing!r} is not valid: use 1-128 characters from "
            "letters, digits, ':', '_' and '-'"
        )
    return thing


def check_model_name(model: str) -> str:
    if not _MODEL_RE.fullmatch(model):
        raise ValueError(
            f"model name {model!r} is not valid: use 1-64 characters from lower-case "
            "letters, digits, '_' and '-', starting with a letter or digit"
        )
    return model


def announcement(model: str, band: int) -> str:
    """Retained topic of one 1% band's nudge: refresh, the rollout moved for this band."""
    if isinstance(band, bool) or not isinstance(band, int) or not 0 <= band < BANDS:
        raise ValueError(f"band {band!r} is not a whole number from 0 to {BANDS - 1}")
    return f"{ROOT}/models/{check_model_name(model)}/bands/{band:02d}/nudge"


@dataclass(frozen=True)
class ThingTopics:
    """The topics one device publishes and subscribes to."""

    thing: str

    def __post_init__(self) -> None:
        check_thing_name(self.thing)

    @property
    def prefix(self) -> str:
        return f"{ROOT}/things/{self.thing}"

    @property
    def upload_request(self) -> str:
        return f"{self.prefix}/upload/request"

    @property
    def upload_response(self) -> str:
        return f"{self.prefix}/upload/response"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    @property
    def nudge(self) -> str:
        """Retained: the nudge a named canary hears when the rollout moves for it."""
        return f"{self.prefix}/nudge"


_THING_TOPIC_RE = re.compile(
    rf"^{ROOT}/things/([^/+#]+)/(upload/request|upload/response|status|events|nudge)$"
)


def thing_of(topic: str) -> str | None:
    """The thing a thing-scoped topic belongs to, or None for any other topic."""
    match = _THING_TOPIC_RE.fullmatch(topic)
    return match.group(1) if match else None
