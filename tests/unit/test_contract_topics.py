"""Topic names, and the guard that keeps a thing name from widening a filter."""

from __future__ import annotations

import pytest

from edgeloop.contract import ThingTopics, announcement, thing_of


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
