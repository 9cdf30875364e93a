"""SQS (S3 ObjectCreated notifications) → retrain, with partial batch failures.

Thin: parse records, register each upload once (Powertools idempotency on
bucket, key and eTag), run one retrain per model, report failed records.
The logic is in functions.retrain.logic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cache, partial
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from edgeloop.contract.signers import KmsSigner
from functions.announce.rollout import start_rollout
from functions.common.clients import client
from functions.common.env import RetrainEnv, cached_env
from functions.common.model_configs import load_model_configs
from functions.common.observability import logger, metrics, tracer
from functions.common.publisher import publisher_from_env
from functions.common.registry import Registry
from functions.common.storage import S3ObjectStore
from functions.retrain.logic import Retrainer, RunOutcome, Upload, parse_notification
from functions.retrain.publish import ReleaseWriter

# Duplicate notifications inside this window are no-ops; S3 redelivers within minutes.
IDEMPOTENCY_TTL_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class Service:
    retrainer: Retrainer
    idempotency: IdempotencyConfig
    register: Any  # the idempotent wrapper around Retrainer.register


def _mark_duplicate(response: Any, idempotent_data: DataRecord) -> Any:
    """Powertools calls this only when it returns a stored result: a duplicate."""
    return {**response, "duplicate": True}


@cache
def service() -> Service:
    env = cached_env(RetrainEnv)
    store = S3ObjectStore(client("s3"))
    registry = Registry(client("dynamodb"), env.registry_table)
    releases = ReleaseWriter(
        store=store,
        registry=registry,
        signer=KmsSigner(client("kms"), env.signing_key_id),
        artifact_bucket=env.artifact_bucket,
        registry_bucket=env.registry_bucket,
        delta_bases=env.delta_bases,
        manifest_ttl=timedelta(days=env.manifest_ttl_days),
    )
    retrainer = Retrainer(
        store=store,
        registry=registry,
        releases=releases,
        data_bucket=env.data_bucket,
        registry_bucket=env.registry_bucket,
        configs=load_model_configs(env.model_config_dir),
        max_training_bytes=env.max_training_bytes,
        stream_above_bytes=env.stream_above_bytes,
        announce=partial(start_rollout, registry, publisher_from_env()),
    )
    idempotency = IdempotencyConfig(
        event_key_jmespath="[bucket, key, etag]",
        expires_after_seconds=IDEMPOTENCY_TTL_SECONDS,
        raise_on_no_idempotency_key=True,
        response_hook=_mark_duplicate,
    )
    persistence = DynamoDBPersistenceLayer(
        table_name=env.idempotency_table, boto3_client=client("dynamodb")
    )

    def register(upload: dict[str, Any]) -> dict[str, Any]:
        return retrainer.register(Upload(**upload))

    wrapped = idempotent_function(
        data_keyword_argument="upload", persistence_store=persistence, config=idempotency
    )(register)
    return Service(retrainer, idempotency, wrapped)


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
    else:
        metrics.add_metric(name="FailedRuns", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    svc = service()
    if event.get("action") == "rollback":
        # Invoked by an operator (`aws lambda invoke`): only this function may sign.
        version = svc.retrainer.rollback(str(event["model"]), int(event["to_version"]))
        logger.info("rollback published", extra={"model": event["model"], "version": version})
        metrics.add_metric(name="Rollbacks", unit=MetricUnit.Count, value=1)
        return {"rollback_version": version}
    svc.idempotency.register_lambda_context(context)
    models_of: dict[str, set[str]] = {}

    def record_handler(record: SQSRecord) -> list[str]:
        models = set()
        for upload in parse_notification(record.body):
            result = svc.register(upload=upload.to_json())
            if result.get("duplicate"):
                metrics.add_metric(name="DuplicateUploads", unit=MetricUnit.Count, value=1)
            models.add(upload.model)
        models_of[record.message_id] = models
        return sorted(models)

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    with processor(records=event["Records"], handler=record_handler, lambda_context=context):
        processor.process()
    failed = {str(f["itemIdentifier"]) for f in processor.response()["batchItemFailures"]}
    metrics.add_metric(name="FailedRecords", unit=MetricUnit.Count, value=len(failed))

    for model in sorted(set().union(*models_of.values())):
        try:
            outcome = svc.retrainer.retrain(model)
        except Exception:
            # Transient (throttling, a network drop, a lost race): the uploads stay
            # pending, and the records come back for another try or go to the DLQ.
            logger.exception("retrain failed; records go back to the queue", extra={"model": model})
            metrics.add_metric(name="FailedRuns", unit=MetricUnit.Count, value=1)
            failed |= {mid for mid, models in models_of.items() if model in models}
            continue
        if outcome is not None:
            logger.info("retrain finished", extra={"outcome": outcome.__dict__})
            _count(outcome)
    return {"batchItemFailures": [{"itemIdentifier": mid} for mid in sorted(failed)]}
