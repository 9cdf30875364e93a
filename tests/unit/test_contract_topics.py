"""Topic names, and the guard that keeps a thing name from widening a filter."""

from __future__ import annotations

import pytest

from edgeloop.contract import (
    IngestTopic,
    RuleNames,
    ThingTopics,
    announcement,
    ingest_topic,
    parse_ingest,
    thing_of,
)


def test_thing_topics_live_under_the_things_own_prefix() -> None:
    topics = ThingTopics("pump-7")
    assert topics.upload_request == "edgeloop/things/pump-7/upload/request"
    assert topics.upload_response == "edgeloop/things/pump-7/upload/response"
    assert topics.status == "edgeloop/things/pump-7/status"
    assert topics.events == "edgeloop/things/pump-7/events"
    assert topics.nudge == "edgeloop/things/pump-7/nudge"
    for topic in (topics.upload_request, topics.status, topics.events):
        assert thing_of(topic) == "pump-7"


@pytest.mark.parametrize("name", ["a/b", "+", "#", "pump 7", "", "x" * 129])
def test_thing_names_that_could_widen_a_topic_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="thing name"):
        ThingTopics(name)


def test_announcements_are_per_model_and_band() -> None:
    assert announcement("digits", 0) == "edgeloop/models/digits/bands/00/nudge"
    assert announcement("digits", 99) == "edgeloop/models/digits/bands/99/nudge"
    for band in (-1, 100):
        with pytest.raises(ValueError, match="band"):
            announcement("digits", band)
    with pytest.raises(ValueError, match="model name"):
        announcement("Digits/+", 0)


def test_other_topics_belong_to_no_thing() -> None:
    assert thing_of("edgeloop/models/digits/bands/07/nudge") is None
    assert thing_of("edgeloop/things/a/b/status") is None


def test_rule_names_follow_the_stack_name_in_the_alphabet_iot_allows() -> None:
    assert RuleNames().status == "edgeloop_status"
    assert RuleNames().upload_requests == "edgeloop_upload_requests"
    staging = RuleNames("edgeloop-staging")
    assert staging.status == "edgeloop_staging_status"
    assert staging.upload_requests == "edgeloop_staging_upload_requests"


@pytest.mark.parametrize("stack", ["", "1stack", "a_b", "a/b", "a+b", "x" * 113])
def test_stack_names_that_cannot_name_a_rule_are_refused(stack: str) -> None:
    with pytest.raises(ValueError, match="stack name"):
        RuleNames(stack)


def test_the_longest_stack_name_still_names_rules_iot_accepts() -> None:
    rules = RuleNames("x" * 112)
    assert len(rules.upload_requests) == 128
    assert ingest_topic(rules.upload_requests, "edgeloop/things/t/upload/request")


def test_a_basic_ingest_topic_names_its_rule_and_keeps_the_thing_the_policy_pinned() -> None:
    topics = ThingTopics("dev-1")
    topic = ingest_topic(RuleNames().status, topics.status)
    assert topic == "$aws/rules/edgeloop_status/edgeloop/things/dev-1/status"
    assert parse_ingest(topic) == IngestTopic("edgeloop_status", topics.status)
    assert thing_of(topic) == "dev-1"
    assert parse_ingest(topics.status) is None
    with pytest.raises(ValueError, match="rule name"):
        ingest_topic("edgeloop-status", topics.status)


@pytest.mark.parametrize(
    "topic",
    [
        "$aws/rules/edgeloop_status",
        "$aws/rules//edgeloop/things/dev-1/status",
        "$aws/rules/edge-loop/edgeloop/things/dev-1/status",
        "$aws/rules/edgeloop_status/edgeloop/things/dev-1/status/extra",
        "$aws/things/dev-1/shadow/update",
    ],
)
def test_malformed_basic_ingest_topics_belong_to_no_thing(topic: str) -> None:
    assert thing_of(topic) is None
