"""Local SageMaker training: a job moto recorded, run as a process over the /opt/ml layout.

moto records `create_training_job` and answers `describe_training_job`, but runs
nothing. `LocalTrainingJobs` plays SageMaker's part for one job: it lays out a
temporary `/opt/ml` (hyperparameters.json; each channel's objects downloaded
with the training role's credentials, a manifest channel's exactly as its
manifest names them), runs the job's entry point (`python -m
edgeloop.factory.job`, from the same task tree the functions run from), uploads
`model/` as model.tar.gz where describe_training_job says the artefact is, and
returns the "SageMaker Training Job State Change" event EventBridge would
deliver: Completed, or Failed with output/failure as the FailureReason.

What differs from SageMaker: no container or instance (the host's interpreter
and memory), no stopping condition enforced beyond a local timeout, and the
event is delivered by the caller, not by a rule.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from edgeloop.factory.handoff import DETAIL_TYPE, manifest_keys
from edgeloop.factory.job import MAX_FAILURE_CHARS, ML_ROOT_ENV, MlPaths

# Run the entry point as `python3 -m edgeloop.factory.job` runs it from /var/task,
# with only the task tree on the path.
_RUN_FROM_TASK_ROOT = (
    "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
    "runpy.run_module('edgeloop.factory.job', run_name='__main__', alter_sys=True)"
)


class LocalJobError(RuntimeError):
    """A job's request asks for something the local stand-in cannot lay out."""


def _split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise LocalJobError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def _jsonable(value: Any) -> Any:
    """describe_training_job's answer as an event carries it: times as epoch milliseconds."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def state_change_event(
    job: Mapping[str, Any], status: str, failure_reason: str | None, region: str
) -> dict[str, Any]:
    """The EventBridge event SageMaker sends when a training job changes state."""
    detail = {**_jsonable(job), "TrainingJobStatus": status}
    if failure_reason is not None:
        detail["FailureReason"] = failure_reason
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": DETAIL_TYPE,
        "source": "aws.sagemaker",
        "account": str(job["TrainingJobArn"]).split(":")[4],
        "time": datetime.now().astimezone().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [job["TrainingJobArn"]],
        "detail": detail,
    }


@dataclass
class LocalTrainingJobs:
    """`s3` acts as SageMaker does with the job's role; `sagemaker` reads what moto recorded."""

    s3: Any
    sagemaker: Any
    region: str
    # The task tree the functions run from; None runs the entry point from this
    # interpreter's own packages (the tests of the factory and the functions).
    task_root: Path | None = None
    python: str = sys.executable
    timeout: float = 900.0
    env: Mapping[str, str] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)

    def pending(self) -> list[str]:
        """Jobs moto recorded that have not run here yet, oldest first."""
        names: list[tuple[Any, str]] = []
        for page in self.sagemaker.get_paginator("list_training_jobs").paginate():
            names.extend(
                (j["CreationTime"], j["TrainingJobName"]) for j in page["TrainingJobSummaries"]
            )
        return [name for _, name in sorted(names) if name not in self.done]

    def run(self, name: str) -> dict[str, Any]:
        """Run one job to its end and return its state-change event."""
        job = self.sagemaker.describe_training_job(TrainingJobName=name)
        self.done.add(name)
        with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
            paths = MlPaths(Path(tmp))
            paths.hyperparameters.parent.mkdir(parents=True)
            paths.hyperparameters.write_text(json.dumps(job.get("HyperParameters", {})))
            for channel in job.get("InputDataConfig", []):
                self._download(channel, paths.channel(channel["ChannelName"]))
            code, output = self._entry_point(paths)
            if code == 0:
                self._upload_model(paths.model, job["ModelArtifacts"]["S3ModelArtifacts"])
                return state_change_event(job, "Completed", None, self.region)
            reason = (
                paths.failure.read_text()[:MAX_FAILURE_CHARS]
                if paths.failure.exists()
                else f"AlgorithmError: exit status {code}: {output[-500:]}"
            )
            return state_change_event(job, "Failed", reason, self.region)

    def _download(self, channel: Mapping[str, Any], into: Path) -> None:
        source = channel["DataSource"]["S3DataSource"]
        bucket, key = _split_s3(source["S3Uri"])
        if source["S3DataType"] == "ManifestFile":
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            prefix, keys = manifest_keys(body)
            data_bucket, base = _split_s3(prefix)
            objects = [(data_bucket, base + k, k) for k in keys]
        elif source["S3DataType"] == "S3Prefix":
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
            found = [o["Key"] for page in pages for o in page.get("Contents", [])]
            # An exact key lands under its own name; a prefix's objects below it.
            objects = [
                (bucket, k, k[len(key) :].lstrip("/") or k.rsplit("/", 1)[-1]) for k in found
            ]
        else:
            raise LocalJobError(f"S3DataType {source['S3DataType']!r} is not stood in for")
        for object_bucket, object_key, relative in objects:
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(
                self.s3.get_object(Bucket=object_bucket, Key=object_key)["Body"].read()
            )

    def _entry_point(self, paths: MlPaths) -> tuple[int, str]:
        if self.task_root is None:
            command: Sequence[str] = [self.python, "-m", "edgeloop.factory.job"]
            cwd = None
        else:
            command = [self.python, "-I", "-S", "-c", _RUN_FROM_TASK_ROOT, str(self.task_root)]
            cwd = str(self.task_root)
        done = subprocess.run(
            command,
            env={**os.environ, **self.env, ML_ROOT_ENV: str(paths.root)},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )
        return done.returncode, done.stdout + done.stderr

    def _upload_model(self, model_dir: Path, uri: str) -> None:
        """model/ as SageMaker packs it: a gzipped tar of its files at the archive root."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for path in sorted(model_dir.rglob("*")):
                archive.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
        bucket, key = _split_s3(uri)
        self.s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
