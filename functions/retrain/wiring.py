"""The retrain function's own parts, built once per cold start from the shared wiring."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

from edgeloop.factory.handoff import Limits
from functions.common.clients import client
from functions.common.cold_start import cold_start
from functions.common.env import RetrainEnv, cached_env
from functions.common.model_configs import load_model_configs
from functions.common.wiring import object_store, registry, release_writer, rollout_starter
from functions.retrain.handoff import JobSettings, TrainingJobs
from functions.retrain.logic import HandOff, Retrainer, Upload, parse_notification

# Duplicate notifications inside this window are no-ops; S3 redelivers within minutes.
IDEMPOTENCY_TTL_SECONDS = 7 * 24 * 3600
# Beyond a job's stopping condition: its instance starting, the image pulled, the
# channels downloaded, the state change delivered. A run past both is ended as failed.
HANDOFF_MARGIN_SECONDS = 3600


@dataclass(frozen=True)
class RecordUploads:
    """What one queue record registered: the models it feeds, and how many were repeats."""

    models: set[str]
    duplicates: int


@dataclass(frozen=True)
class RetrainService:
    retrainer: Retrainer
    idempotency: IdempotencyConfig
    register: Any  # Retrainer.register behind Powertools idempotency

    def register_record(self, body: str) -> RecordUploads:
        models, duplicates = set(), 0
        for upload in parse_notification(body):
            if self.register(upload=upload.to_json()).get("duplicate"):
                duplicates += 1
            models.add(upload.model)
        return RecordUploads(models, duplicates)


def _mark_duplicate(response: Any, idempotent_data: DataRecord) -> Any:
    """Powertools calls this only when it returns a stored result: a duplicate."""
    return {**response, "duplicate": True}


def _handoff(env: RetrainEnv) -> HandOff | None:
    """Training jobs for runs beyond the limits, when the stack gave the function a role
    and an image for them."""
    if env.training_role_arn is None or env.training_image_uri is None:
        return None
    jobs = TrainingJobs(
        client("sagemaker"),
        object_store(),
        JobSettings(
            role_arn=env.training_role_arn,
            image_uri=env.training_image_uri,
            instance_type=env.training_instance_type,
            volume_gb=env.training_volume_gb,
            max_seconds=env.training_max_seconds,
            data_bucket=env.data_bucket,
            registry_bucket=env.registry_bucket,
            stream_above_bytes=env.stream_above_bytes,
        ),
    )
    return HandOff(
        Limits(env.handoff_memory_bytes, env.handoff_seconds),
        jobs.start,
        deadline_seconds=env.training_max_seconds + HANDOFF_MARGIN_SECONDS,
    )


@cold_start
def retrain_service() -> RetrainService:
    env = cached_env(RetrainEnv)
    retrainer = Retrainer(
        store=object_store(),
        registry=registry(env.registry_table),
        releases=release_writer(),
        data_bucket=env.data_bucket,
        registry_bucket=env.registry_bucket,
        configs=load_model_configs(env.model_config_dir),
        max_training_bytes=env.max_training_bytes,
        stream_above_bytes=env.stream_above_bytes,
        announce=rollout_starter(),
        handoff=_handoff(env),
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
    return RetrainService(retrainer, idempotency, wrapped)
