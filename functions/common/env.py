"""Environment config for each function, checked once at cold start.

A missing or malformed variable stops the function on its first invocation
with the variable named, instead of failing somewhere in the middle of a batch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from functions.common.cold_start import cold_start


class EnvError(RuntimeError):
    """The function's environment is missing a variable or has a bad value."""


class _Env(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class IdentityEnv(_Env):
    """Where a function looks up who a device is (functions.common.identity)."""

    # The IoT thing group whose members are the named canaries.
    canary_group: str = Field(alias="CANARY_GROUP", min_length=1)
    # Where each device's last known identity is kept, and how long it is trusted
    # before the thing registry is asked again.
    fleet_table: str = Field(alias="FLEET_TABLE", min_length=3)
    identity_ttl_hours: Annotated[float, Field(gt=0.0, le=24 * 30)] = Field(
        default=24.0, alias="IDENTITY_TTL_HOURS"
    )


class PresignEnv(IdentityEnv):
    data_bucket: str = Field(alias="DATA_BUCKET", min_length=3)
    model_config_dir: Path = Field(alias="MODEL_CONFIG_DIR")
    # Upload grants per device per window, counted in the fleet table.
    grants_per_window: Annotated[int, Field(ge=1)] = Field(default=120, alias="GRANTS_PER_WINDOW")
    grant_window_seconds: Annotated[int, Field(ge=1, le=86400)] = Field(
        default=3600, alias="GRANT_WINDOW_SECONDS"
    )
    max_upload_bytes: Annotated[int, Field(ge=1, le=5 * 1024**3)] = Field(
        default=16 * 1024 * 1024, alias="MAX_UPLOAD_BYTES"
    )
    url_ttl_seconds: Annotated[int, Field(ge=10, le=3600)] = Field(
        default=300, alias="URL_TTL_SECONDS"
    )


class ProvisioningHookEnv(_Env):
    """What the pre-provisioning hook needs: the allow-list, and the two thing groups
    an admitted device may join (the named canaries', the rest of the fleet's)."""

    admission_table: str = Field(alias="ADMISSION_TABLE", min_length=3)
    canary_group: str = Field(alias="CANARY_GROUP", min_length=1)
    fleet_group: str = Field(alias="FLEET_GROUP", min_length=1)


class StatusEnv(IdentityEnv):
    """What the status function needs to count an outcome: no key, no bucket (devices
    reach it; the stage decision and its signature are the schedule's)."""

    registry_table: str = Field(alias="REGISTRY_TABLE", min_length=3)


class RolloutEnv(IdentityEnv):
    """What moves rollouts on (the schedule), and what starts them (retrain, rollback):
    each may sign the fleet's TUF metadata (a rollout pointer, a fresh timestamp)."""

    model_config_dir: Path = Field(alias="MODEL_CONFIG_DIR")
    registry_table: str = Field(alias="REGISTRY_TABLE", min_length=3)
    # The TUF repository lives under models/tuf/ here, behind the CDN.
    artifact_bucket: str = Field(alias="ARTIFACT_BUCKET", min_length=3)
    # The online key: signs targets, snapshot and timestamp (never root).
    signing_key_id: str = Field(alias="SIGNING_KEY_ID", min_length=1)


class ReleaseEnv(RolloutEnv):
    """What a function that publishes versions, then starts their rollout, needs
    (retrain, rollback)."""

    registry_bucket: str = Field(alias="REGISTRY_BUCKET", min_length=3)
    delta_bases: Annotated[int, Field(ge=0, le=32)] = Field(default=3, alias="DELTA_BASES")


class RetrainEnv(ReleaseEnv):
    data_bucket: str = Field(alias="DATA_BUCKET", min_length=3)
    idempotency_table: str = Field(alias="IDEMPOTENCY_TABLE", min_length=3)
    max_training_bytes: Annotated[int, Field(ge=1)] = Field(
        default=512 * 1024 * 1024, alias="MAX_TRAINING_BYTES"
    )
    # k-means data above this many bytes is trained chunk by chunk from S3.
    stream_above_bytes: Annotated[int, Field(ge=1)] = Field(
        default=256 * 1024 * 1024, alias="STREAM_ABOVE_BYTES"
    )
    # A run estimated (edgeloop.factory.handoff) above either limit is handed to a
    # SageMaker training job, when TRAINING_ROLE_ARN is set; without it the run
    # trains here on what fits MAX_TRAINING_BYTES, as before.
    handoff_memory_bytes: Annotated[int, Field(ge=1)] = Field(
        default=2 * 1024**3, alias="HANDOFF_MEMORY_BYTES"
    )
    handoff_seconds: Annotated[float, Field(gt=0.0)] = Field(default=600.0, alias="HANDOFF_SECONDS")
    training_role_arn: str | None = Field(default=None, alias="TRAINING_ROLE_ARN", min_length=20)
    # The functions image, whose alternate command is the training entry point.
    training_image_uri: str | None = Field(default=None, alias="TRAINING_IMAGE_URI", min_length=1)
    training_instance_type: str = Field(
        default="ml.m5.4xlarge",
        alias="TRAINING_INSTANCE_TYPE",
        pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$",
    )
    training_volume_gb: Annotated[int, Field(ge=1, le=16384)] = Field(
        default=100, alias="TRAINING_VOLUME_GB"
    )
    # The job's stopping condition: SageMaker stops it past this and reports Stopped.
    training_max_seconds: Annotated[int, Field(ge=60, le=28 * 86400)] = Field(
        default=6 * 3600, alias="TRAINING_MAX_SECONDS"
    )

    @model_validator(mode="after")
    def _handoff_complete(self) -> RetrainEnv:
        if (self.training_role_arn is None) != (self.training_image_uri is None):
            raise ValueError("set TRAINING_ROLE_ARN and TRAINING_IMAGE_URI together, or neither")
        return self


class TrainingDoneEnv(ReleaseEnv):
    """The completion of a handed-off run: its job's artefact is under training/ here."""

    data_bucket: str = Field(alias="DATA_BUCKET", min_length=3)


E = TypeVar("E", bound=_Env)


def load_env(schema: type[E], environ: Mapping[str, str] | None = None) -> E:
    source = dict(os.environ if environ is None else environ)
    try:
        return schema.model_validate(source)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise EnvError(f"{schema.__name__} is misconfigured: {problems}") from exc


@cold_start
def cached_env(schema: type[E]) -> E:
    """The environment parsed once per cold start."""
    return load_env(schema)
