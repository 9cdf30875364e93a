"""EventBridge ("SageMaker Training Job State Change") → the end of a handed-off run."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.common.cold_start import cold_start
from functions.common.env import TrainingDoneEnv, cached_env
from functions.common.model_configs import load_model_configs
from functions.common.observability import logger, metrics, tracer
from functions.common.runs import RunEnding
from functions.common.wiring import object_store, registry, release_writer, rollout_starter
from functions.training_done.logic import JobCompletion, JobState


@cold_start
def completion() -> JobCompletion:
    env = cached_env(TrainingDoneEnv)
    store, runs = object_store(), registry(env.registry_table)
    return JobCompletion(
        store=store,
        registry=runs,
        ending=RunEnding(store, runs, release_writer(), env.registry_bucket, rollout_starter()),
        data_bucket=env.data_bucket,
        configs=load_model_configs(env.model_config_dir),
    )


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    state = JobState.from_event(event)
    outcome = completion().complete(state)
    if outcome is None:
        logger.info("nothing to end", extra={"job": state.name, "status": state.status})
        metrics.add_metric(name="IgnoredJobEvents", unit=MetricUnit.Count, value=1)
        return {"job": state.name, "ended": False}
    logger.info("handed-off run ended", extra={"job": state.name, "outcome": outcome.__dict__})
    name = "Promotions" if outcome.version is not None else "HandedOffRunsEnded"
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
    if outcome.decision == "failed":
        metrics.add_metric(name="FailedRuns", unit=MetricUnit.Count, value=1)
    return {
        "job": state.name,
        "ended": True,
        "decision": outcome.decision,
        "version": outcome.version,
    }
