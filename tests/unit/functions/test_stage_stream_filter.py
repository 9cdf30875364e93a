"""Which registry changes reach the schedule function, and which models it then evaluates:
the stack's stream filter as the local router applies it, without AWS."""

from __future__ import annotations

from typing import Any

import pytest

from edgeloop.local.streams import UnsupportedFilter, passes
from functions.common.registry import STAGE_COUNTER_FILTER, counted_models
from functions.evaluate_rollouts.logic import models_to_evaluate


def change(sk: str, event: str = "MODIFY", model: str = "vibration") -> dict[str, Any]:
    """A stream record as Lambda delivers it (KEYS_ONLY)."""
    return {
        "eventName": event,
        "eventSource": "aws:dynamodb",
        "dynamodb": {"Keys": {"pk": {"S": f"model#{model}"}, "sk": {"S": sk}}},
    }


COUNTER = "tally#version#0000000002#stage#00"


@pytest.mark.parametrize("event", ["INSERT", "MODIFY"])
def test_a_stage_counter_created_or_changed_passes(event: str) -> None:
    assert passes(STAGE_COUNTER_FILTER, change(COUNTER, event))


@pytest.mark.parametrize(
    "record",
    [
        change("rollout"),  # the schedule's own writes never invoke it again
        change("upload#0001"),
        change("pending#data/vibration/pump-1/1.npz", "INSERT"),
        change("run#0001", "INSERT"),
        change(COUNTER, "REMOVE"),
        {"eventName": "MODIFY", "dynamodb": {}},
    ],
)
def test_every_other_registry_change_is_filtered_out(record: dict[str, Any]) -> None:
    assert not passes(STAGE_COUNTER_FILTER, record)


def test_a_filter_operator_the_router_does_not_know_is_refused() -> None:
    with pytest.raises(UnsupportedFilter, match="not supported locally"):
        passes({"dynamodb": {"Keys": {"sk": {"S": [{"anything-but": "x"}]}}}}, change(COUNTER))


def test_a_batch_names_each_model_once() -> None:
    batch = [change(COUNTER), change(COUNTER), change(COUNTER, model="digits"), change("rollout")]
    assert counted_models(batch) == ["digits", "vibration"]


def test_the_schedule_evaluates_every_model_and_the_stream_only_those_it_names() -> None:
    configured = ["digits", "vibration"]
    assert models_to_evaluate({}, configured) == (configured, True)
    scheduled = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
    assert models_to_evaluate(scheduled, configured) == (configured, True)
    assert models_to_evaluate({"Records": [change(COUNTER)]}, configured) == (
        ["vibration"],
        False,
    )


def test_an_event_of_another_source_is_refused_with_what_the_function_takes() -> None:
    with pytest.raises(ValueError, match="schedule's event or a batch of the registry stream"):
        models_to_evaluate({"Records": [{"eventSource": "aws:sqs"}]}, ["vibration"])
