"""Scheduled rollout evaluation (EventBridge, every minute).

Status reports also trigger an evaluation (functions.status); the schedule is
what closes a canary window when devices go quiet.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.announce.rollout import RolloutPolicy, Rollouts
from functions.common.clients import client
from functions.common.env import RolloutEnv, cached_env
from functions.common.fleet import FleetTable
from functions.common.model_configs import load_model_configs
from functions.common.observability import logger, metrics, tracer
from functions.common.publisher import publisher_from_env
from functions.common.registry import Registry
from functions.common.storage import S3ObjectStore


def rollout_policy(env: RolloutEnv) -> RolloutPolicy:
    return RolloutPolicy(
        healthy_needed=env.canary_healthy_count,
        window=timedelta(seconds=env.canary_window_seconds),
        abort_share=env.abort_failure_share,
        abort_min_reports=env.abort_min_reports,
    )


@cache
def rollouts() -> Rollouts:
    env = cached_env(RolloutEnv)
    return Rollouts(
        registry=Registry(client("dynamodb"), env.registry_table),
        fleet=FleetTable(client("dynamodb"), env.fleet_table),
        publisher=publisher_from_env(),
        store=S3ObjectStore(client("s3")),
        artifact_bucket=env.artifact_bucket,
        policy=rollout_policy(env),
    )


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    env = cached_env(RolloutEnv)
    decided = {}
    models = sorted(load_model_configs(env.model_config_dir))
    metrics.add_metric(name="RolloutEvaluations", unit=MetricUnit.Count, value=len(models))
    for model in models:
        announced = rollouts().ensure_announced(model)
        if announced is not None:
            logger.warning(
                "champion was unannounced; announced now",
                extra={"model": model, "version": announced},
            )
            metrics.add_metric(name="LateAnnouncements", unit=MetricUnit.Count, value=1)
        state = rollouts().evaluate(model)
        if state is not None:
            decided[model] = state
            metrics.add_metric(name=f"Rollout{state.capitalize()}", unit=MetricUnit.Count, value=1)
            logger.info("rollout moved", extra={"model": model, "state": state})
    return {"decided": decided}
