"""Operator-invoked rollback: `aws lambda invoke` with {"model": ..., "to_version": ...}.

Its own function so that only it and retrain hold the signing key; a payload
that is not a valid request fails the invocation with RollbackRefused.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.common.env import ReleaseEnv, cached_env
from functions.common.model_configs import load_model_configs
from functions.common.observability import logger, metrics, tracer
from functions.common.wiring import registry, release_writer, rollout_starter
from functions.rollback.logic import RollbackRequest, roll_back


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    env = cached_env(ReleaseEnv)
    request = RollbackRequest.from_event(event)
    version = roll_back(
        request,
        load_model_configs(env.model_config_dir),
        registry(env.registry_table),
        release_writer(),
        rollout_starter(),
    )
    logger.info("rollback published", extra={"model": request.model, "version": version})
    metrics.add_metric(name="Rollbacks", unit=MetricUnit.Count, value=1)
    return {"rollback_version": version}
