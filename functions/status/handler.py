"""IoT rule → status: record a device's report; an outcome that counted may move its rollout on.

The rule is `{stack}_status`, `SELECT *, topic(3) AS topic_thing FROM 'edgeloop/things/+/status'`;
agents publish to it by name (Basic Ingest), older ones on the plain topic.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.common.env import RolloutEnv, cached_env
from functions.common.observability import logger, metrics, tracer
from functions.common.rules import split_rule_event
from functions.common.wiring import fleet, identity, registry, rollouts
from functions.status.logic import StatusIgnored, record_status


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    env = cached_env(RolloutEnv)
    thing, payload = split_rule_event(event)
    try:
        recorded = record_status(
            fleet(env.fleet_table),
            registry(env.registry_table),
            thing,
            payload,
            identity(),
            rollouts().get,
        )
    except StatusIgnored as exc:
        logger.warning("status ignored", extra={"thing": thing, "reason": str(exc)})
        metrics.add_metric(name="StatusIgnored", unit=MetricUnit.Count, value=1)
        return {"recorded": False, "reason": str(exc)}
    metrics.add_metric(name="StatusRecorded", unit=MetricUnit.Count, value=1)
    if not recorded.counted:
        return {"recorded": True, "counted": False}
    metrics.add_metric(name="OutcomeCounted", unit=MetricUnit.Count, value=1)
    moved = rollouts().evaluate(recorded.record.report.model, rollout=recorded.rollout)
    if moved is not None:
        logger.info("rollout moved", extra={"model": recorded.record.report.model, "to": moved})
    return {"recorded": True, "counted": True, "rollout": moved}
