"""The schedule function: the only place a rollout stage is decided and signed, where no
device can reach.

EventBridge invokes it every minute: it closes a stage's window when devices go
quiet, finishes a publish that failed half-way (including an operator's abort),
starts a champion whose rollout never started, and keeps the fleet's signed
metadata fresh (a new timestamp every run, so devices notice a frozen CDN; the
other online roles before they expire). The registry's stream invokes it within
about a second of a counted outcome (the status function only counts), with the
stage counters that changed: it evaluates those models' rollouts only.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.common.env import RolloutEnv, cached_env
from functions.common.model_configs import load_model_configs
from functions.common.observability import logger, metrics, tracer
from functions.common.runs import expire_handed_off
from functions.common.wiring import registry, rollouts, trust_repository
from functions.evaluate_rollouts.logic import evaluate, models_to_evaluate


def _moved(model: str, state: str) -> None:
    name = "RolloutAdvanced" if state.startswith("stage") else f"Rollout{state.capitalize()}"
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
    logger.info("rollout moved", extra={"model": model, "state": state})


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    env = cached_env(RolloutEnv)
    models, scheduled = models_to_evaluate(event, sorted(load_model_configs(env.model_config_dir)))
    metrics.add_metric(name="RolloutEvaluations", unit=MetricUnit.Count, value=len(models))
    done = evaluate(rollouts(), models, repair=scheduled, on_decision=_moved)
    for model, repair in done.repairs.items():
        logger.warning(repair.what, extra={"model": model, "version": repair.version})
        metrics.add_metric(name="LateAnnouncements", unit=MetricUnit.Count, value=1)
    if not scheduled:
        return {"decided": done.decided, "evaluated": models}
    for model in models:
        for run_id in expire_handed_off(registry(env.registry_table), model):
            logger.warning("a training job never reported", extra={"model": model, "run": run_id})
            metrics.add_metric(name="UnreportedTrainingJobs", unit=MetricUnit.Count, value=1)
    resigned = trust_repository().resign_due()
    metrics.add_metric(name="MetadataResigned", unit=MetricUnit.Count, value=len(resigned))
    return {"decided": done.decided, "resigned": resigned}
