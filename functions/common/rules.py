"""What the IoT topic rules add to a device's message before a handler sees it."""

from __future__ import annotations

from typing import Any

# The rules select `*, topic(3) AS topic_thing`: the thing name as the topic
# (and so the IoT policy) proved it, kept apart from anything the payload claims.
TOPIC_THING = "topic_thing"


def split_rule_event(event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The thing the topic proved, and the device's own payload without it."""
    thing = str(event.get(TOPIC_THING, ""))
    return thing, {k: v for k, v in event.items() if k != TOPIC_THING}


def rule_sql(topic_filter: str) -> str:
    return f"SELECT *, topic(3) AS {TOPIC_THING} FROM '{topic_filter}'"
