"""Scheduled rollout evaluation (EventBridge, every minute).

Counted outcomes also trigger an evaluation (functions.status); the schedule is
what closes a stage's window when devices go quiet, what finishes a publish
that failed half-way (including an operator's abort), and what starts a
champion whose rollout never started. It also keeps the fleet's signed
metadata fresh: a new timestamp every run (it expires in hours, so devices
notice a frozen CDN), the other online roles before they expire.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.common.env import RolloutEnv, cached_env
from functions.common.model_configs import load_model_configs
from functions.common.observability import logger, metrics, tracer
from functions.common.wiring import rollouts, trust_repository


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    env = cached_env(RolloutEnv)
    decided = {}
    models = sorted(load_model_configs(env.model_config_dir))
    metrics.add_metric(name="RolloutEvaluations", unit=MetricUnit.Count, value=len(models))
    for model in models:
        repair = rollouts().ensure_announced(model)
        if repair is not None:
            logger.warning(repair.what, extra={"model": model, "version": repair.version})
            metrics.add_metric(name="LateAnnouncements", unit=MetricUnit.Count, value=1)
        state = rollouts().evaluate(model)
        if state is not None:
            decided[model] = state
            name = (
                "RolloutAdvanced" if state.startswith("stage") else f"Rollout{state.capitalize()}"
            )
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
            logger.info("rollout moved", extra={"model": model, "state": state})
    resigned = trust_repository().resign_due()
    metrics.add_metric(name="MetadataResigned", unit=MetricUnit.Count, value=len(resigned))
    return {"decided": decided, "resigned": resigned}
