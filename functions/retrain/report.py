"""What the retrain function tells CloudWatch: its logs and the training and bytes graphs."""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit

from functions.common.observability import logger, metrics
from functions.common.runs import HANDED_OFF, RunOutcome
from functions.retrain.logic import WAITING


def report_runs(outcomes: list[RunOutcome], failures: dict[str, Exception]) -> None:
    for model, exc in failures.items():
        logger.error(
            "retrain failed; records go back to the queue", extra={"model": model}, exc_info=exc
        )
        metrics.add_metric(name="FailedRuns", unit=MetricUnit.Count, value=1)
    for outcome in outcomes:
        logger.info("retrain finished", extra={"outcome": outcome.__dict__})
        _count(outcome)


def _count(outcome: RunOutcome) -> None:
    metrics.add_metric(name="RetrainRuns", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="QuarantinedBatches", unit=MetricUnit.Count, value=outcome.quarantined)
    if outcome.decision == "promoted":
        metrics.add_metric(name="Promotions", unit=MetricUnit.Count, value=1)
        metrics.add_metric(
            name="FullArtifactBytes", unit=MetricUnit.Bytes, value=outcome.full_bytes
        )
        for size in outcome.patch_bytes:
            metrics.add_metric(name="PatchBytes", unit=MetricUnit.Bytes, value=size)
    elif outcome.decision == "refused":
        metrics.add_metric(name="RefusedPromotions", unit=MetricUnit.Count, value=1)
    elif outcome.decision == HANDED_OFF:
        metrics.add_metric(name="HandedOffRuns", unit=MetricUnit.Count, value=1)
    elif outcome.decision == WAITING:
        metrics.add_metric(name="RunsWaitingForTrainingJob", unit=MetricUnit.Count, value=1)
    else:
        metrics.add_metric(name="FailedRuns", unit=MetricUnit.Count, value=1)


def report_duplicates(count: int) -> None:
    if count:
        metrics.add_metric(name="DuplicateUploads", unit=MetricUnit.Count, value=count)


def report_failed_records(count: int) -> None:
    metrics.add_metric(name="FailedRecords", unit=MetricUnit.Count, value=count)
