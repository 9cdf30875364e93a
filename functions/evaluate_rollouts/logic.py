"""What the schedule function evaluates, by what invoked it.

Two event sources invoke it. EventBridge, every minute: every configured model,
with repairs (a publish left half-done, a champion whose rollout never started)
and the repository's periodic re-signing. The registry's stream, within about a
second of a counted outcome: only the models whose stage counters changed,
because only their rollouts can have moved. The stream is the fast path; the
schedule is what still moves every rollout when the stream is late or a batch
failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from functions.common.registry import counted_models
from functions.common.rollouts import Repair, Rollouts

STREAM_SOURCE = "aws:dynamodb"


@dataclass(frozen=True)
class Evaluation:
    models: list[str]
    repairs: dict[str, Repair] = field(default_factory=dict)
    decided: dict[str, str] = field(default_factory=dict)


def stream_records(event: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The DynamoDB stream records of a stream event, or None for any other event."""
    records = event.get("Records")
    if not isinstance(records, list) or not records:
        return None
    if not all(isinstance(r, dict) and r.get("eventSource") == STREAM_SOURCE for r in records):
        raise ValueError(
            "evaluate_rollouts takes the schedule's event or a batch of the registry "
            f"stream's records ({STREAM_SOURCE}); this event has other records"
        )
    return records


def evaluate(
    rollouts: Rollouts,
    models: list[str],
    repair: bool,
    on_decision: Callable[[str, str], None] = lambda model, state: None,
) -> Evaluation:
    """Move each model's rollout on if its counters say so; with `repair`, first finish
    what a failure left (the schedule only)."""
    done = Evaluation(models)
    for model in models:
        if repair:
            fixed = rollouts.ensure_announced(model)
            if fixed is not None:
                done.repairs[model] = fixed
        state = rollouts.evaluate(model)
        if state is not None:
            done.decided[model] = state
            on_decision(model, state)
    return done


def models_to_evaluate(event: dict[str, Any], configured: list[str]) -> tuple[list[str], bool]:
    """The models an invocation evaluates, and whether it is the schedule's."""
    records = stream_records(event)
    if records is None:
        return configured, True
    return counted_models(records), False
