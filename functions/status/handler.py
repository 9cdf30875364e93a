"""IoT rule → status: record a device's report, and count an outcome toward its stage.

The rule is `{stack}_status`, `SELECT *, topic(3) AS topic_thing FROM 'edgeloop/things/+/status'`;
agents publish to it by name (Basic Ingest), older ones on the plain topic.

Devices reach this function, so it only counts: it holds no signing key, writes
nothing devices fetch and publishes nothing. A counted outcome changes its stage's
counter item in the registry; the registry's stream carries that change to the
schedule function (`evaluate_rollouts`), which decides the stage and signs it.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.common.env import StatusEnv, cached_env
from functions.common.observability import logger, metrics, tracer
from functions.common.rollouts import read_rollout
from functions.common.rules import split_rule_event
from functions.common.wiring import fleet, identity, registry
from functions.status.logic import StatusIgnored, record_status


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    env = cached_env(StatusEnv)
    thing, payload = split_rule_event(event)
    registered = registry(env.registry_table)
    try:
        recorded = record_status(
            fleet(env.fleet_table),
            registered,
            thing,
            payload,
            identity(),
            lambda model: read_rollout(registered, model),
        )
    except StatusIgnored as exc:
        logger.warning("status ignored", extra={"thing": thing, "reason": str(exc)})
        metrics.add_metric(name="StatusIgnored", unit=MetricUnit.Count, value=1)
        return {"recorded": False, "reason": str(exc)}
    metrics.add_metric(name="StatusRecorded", unit=MetricUnit.Count, value=1)
    if recorded.counted:
        metrics.add_metric(name="OutcomeCounted", unit=MetricUnit.Count, value=1)
    return {"recorded": True, "counted": recorded.counted}
