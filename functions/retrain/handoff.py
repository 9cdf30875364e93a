"""Starting a SageMaker training job for a run that does not fit in the function.

Plain boto3 `create_training_job`: the job runs the functions image with its
alternate command, the training entry point (`python3 -m edgeloop.factory.job`),
on exactly the objects the run chose (a manifest written under the run's
prefix), with the model config as hyperparameters and a stopping condition.
Its model artefact lands under the same run prefix; the completion function
(`functions.training_done`) picks it up from the job's state-change event.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgeloop.factory.config import ModelConfig
from edgeloop.factory.handoff import (
    CHAMPION_CHANNEL,
    DATA_CHANNEL,
    ENTRY_POINT,
    REFERENCE_CHANNEL,
    RUN_ID,
    STREAM_ABOVE,
    config_hyperparameters,
    manifest_body,
    run_prefix,
)
from functions.common.storage import ObjectStore

# SageMaker's training job names: 1-63 characters, letters, digits and inner hyphens.
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


@dataclass(frozen=True)
class JobSettings:
    role_arn: str
    image_uri: str
    instance_type: str
    volume_gb: int
    max_seconds: int
    data_bucket: str
    registry_bucket: str
    stream_above_bytes: int


def job_name(model: str, run_id: str) -> str:
    """`el-{model}-{run_id}`, the model cut to fit SageMaker's 63 characters."""
    name = f"el-{model.replace('_', '-')[:28].strip('-')}-{run_id}"
    if not _JOB_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid training job name")
    return name


def _s3_prefix_channel(name: str, uri: str, data_type: str = "S3Prefix") -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": data_type,
                "S3Uri": uri,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        "InputMode": "File",
    }


def training_job_request(
    settings: JobSettings,
    config: ModelConfig,
    run_id: str,
    champion_key: str | None,
) -> dict[str, Any]:
    """The `create_training_job` arguments for one run (its manifest already written)."""
    model = config.model.name
    prefix = run_prefix(model, run_id)
    channels = [
        _s3_prefix_channel(
            DATA_CHANNEL, f"s3://{settings.data_bucket}/{prefix}manifest.json", "ManifestFile"
        )
    ]
    if champion_key is not None:
        channels.append(
            _s3_prefix_channel(CHAMPION_CHANNEL, f"s3://{settings.registry_bucket}/{champion_key}")
        )
    if config.gate.reference is not None:
        channels.append(
            _s3_prefix_channel(
                REFERENCE_CHANNEL, f"s3://{settings.data_bucket}/{config.gate.reference}"
            )
        )
    return {
        "TrainingJobName": job_name(model, run_id),
        "HyperParameters": {
            **config_hyperparameters(config),
            RUN_ID: run_id,
            STREAM_ABOVE: str(settings.stream_above_bytes),
        },
        "AlgorithmSpecification": {
            "TrainingImage": settings.image_uri,
            "TrainingInputMode": "File",
            "ContainerEntrypoint": list(ENTRY_POINT),
        },
        "RoleArn": settings.role_arn,
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": f"s3://{settings.data_bucket}/{prefix}output"},
        "ResourceConfig": {
            "InstanceType": settings.instance_type,
            "InstanceCount": 1,
            "VolumeSizeInGB": settings.volume_gb,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": settings.max_seconds},
        "Tags": [
            {"Key": "edgeloop:model", "Value": model},
            {"Key": "edgeloop:run", "Value": run_id},
        ],
    }


@dataclass(frozen=True)
class TrainingJobs:
    sagemaker: Any
    store: ObjectStore
    settings: JobSettings

    def start(
        self, config: ModelConfig, run_id: str, keys: Sequence[str], champion_key: str | None
    ) -> str:
        """Write the run's manifest, start its job, and return the job's name."""
        request = training_job_request(self.settings, config, run_id, champion_key)
        self.store.put(
            self.settings.data_bucket,
            f"{run_prefix(config.model.name, run_id)}manifest.json",
            manifest_body(self.settings.data_bucket, keys),
            content_type="application/json",
        )
        self.sagemaker.create_training_job(**request)
        return str(request["TrainingJobName"])
