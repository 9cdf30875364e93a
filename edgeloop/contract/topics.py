"""Every MQTT topic of the loop, in one place.

Thing-scoped topics live under `edgeloop/things/{thing}/` so that one IoT
policy statement, keyed on `${iot:Connection.Thing.ThingName}`, pins a device
to its own topics.

What only an IoT rule consumes (status reports, upload requests) a device
publishes with Basic Ingest: `$aws/rules/{rule}/` before the usual topic sends
the message straight to the rule named, past the message broker, with no
messaging charge. The rules' names follow from the stack's name, so both sides
derive them here.
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
# CloudFormation stack names, short enough that every rule named after one
# (`{stack}_upload_requests` the longest) stays within IoT's 128 characters.
_STACK_MAX = 128 - len("_upload_requests")
_STACK_RE = re.compile(rf"^[A-Za-z][A-Za-z0-9-]{{0,{_STACK_MAX - 1}}}$")
_RULE_RE = re.compile(r"^[A-Za-z0-9_]{1,128}$")

INGEST_PREFIX = "$aws/rules/"
# The stack's name when `cdk deploy` is not given `-c stack_name=...`.
DEFAULT_STACK = "edgeloop"


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


def check_stack_name(stack: str) -> str:
    if not _STACK_RE.fullmatch(stack):
        raise ValueError(
            f"stack name {stack!r} is not valid: use 1-{_STACK_MAX} characters from "
            "letters, digits and '-', starting with a letter (the IoT rules are named after it)"
        )
    return stack


@dataclass(frozen=True)
class RuleNames:
    """The names of one stack's IoT topic rules.

    Explicit and derived from the stack's name, so that a device can publish to a
    rule by name and two stacks in one account and region never share a rule.
    """

    stack: str = DEFAULT_STACK

    def __post_init__(self) -> None:
        check_stack_name(self.stack)

    def _named(self, what: str) -> str:
        # Rule names allow only letters, digits and '_'; stack names have '-' but no '_'.
        return f"{self.stack.replace('-', '_')}_{what}"

    @property
    def status(self) -> str:
        return self._named("status")

    @property
    def upload_requests(self) -> str:
        return self._named("upload_requests")

    @property
    def presence(self) -> str:
        """IoT Core's lifecycle events into the presence table; no device publishes to it."""
        return self._named("presence")


def ingest_topic(rule: str, topic: str) -> str:
    """`topic` published with Basic Ingest: straight to the rule named, past the broker."""
    if not _RULE_RE.fullmatch(rule):
        raise ValueError(f"rule name {rule!r} is not valid: use 1-128 letters, digits and '_'")
    return f"{INGEST_PREFIX}{rule}/{topic}"


@dataclass(frozen=True)
class IngestTopic:
    """A Basic Ingest topic: the rule it names, and the topic the rule's SQL sees."""

    rule: str
    topic: str


_INGEST_RE = re.compile(rf"^{re.escape(INGEST_PREFIX)}([A-Za-z0-9_]{{1,128}})/(.+)$")


def parse_ingest(topic: str) -> IngestTopic | None:
    """The rule and inner topic of a Basic Ingest topic, or None for any other topic.

    The prefix's three levels are not part of what the rule sees: its `topic(n)`
    counts from the inner topic.
    """
    match = _INGEST_RE.fullmatch(topic)
    return IngestTopic(match.group(1), match.group(2)) if match else None


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
    def presence(self) -> str:
        """Where a local broker's stand-in for IoT Core's lifecycle events listens: the
        agent's last will and its "connected" (`[broker] presence_will`); unused on AWS."""
        return f"{self.prefix}/presence"

    @property
    def nudge(self) -> str:
        """Retained: the nudge a named canary hears when the rollout moves for it."""
        return f"{self.prefix}/nudge"


_THING_TOPIC_RE = re.compile(
    rf"^{ROOT}/things/([^/+#]+)/(upload/request|upload/response|status|events|nudge)$"
)


def thing_of(topic: str) -> str | None:
    """The thing a thing-scoped topic belongs to, or None for any other topic.

    A Basic Ingest topic is read as its rule reads it, without the prefix: the IoT
    policy pins the thing name in both forms, which is why the cloud may trust it.
    """
    ingest = parse_ingest(topic)
    match = _THING_TOPIC_RE.fullmatch(topic if ingest is None else ingest.topic)
    return match.group(1) if match else None
