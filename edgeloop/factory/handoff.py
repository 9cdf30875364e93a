"""When a run outgrows the retrain function, and what it hands to a training job.

A Lambda function has 10 GB of memory and 15 minutes at most. Before training,
the retrain function estimates a run from its decoded bytes, its model kind and
the kind's parameters (`estimate_run`), and compares the estimate with its
limits (`Limits`). A run that does not fit is handed to a SageMaker training
job, which runs the same factory code in the same image (`edgeloop.factory.job`).

What crosses from the function to the job is plain data: the model config as
hyperparameters (`config_hyperparameters`, read back by `config_from_hyperparameters`)
and the exact objects the run chose as a manifest (`manifest_body`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgeloop.factory.config import (
    KMeansParams,
    LogisticParams,
    MLPParams,
    ModelConfig,
    parse_config,
)

# The floating-point rate the time estimate assumes: about a fifth of what
# scikit-learn reached on a shared 2-core machine (bench/handoff.py: k-means and
# logistic regression finished 3 to 4 times faster than estimated at this rate).
# An estimate that errs long hands a borderline run to a job, which costs minutes
# of an instance; one that errs short times the function out.
FLOPS_PER_SECOND = 5e9
# In-memory training holds the decoded rows about five times at its peak (the
# dataset, its train and held-out split, the standardised copy the estimator fits
# on, screening's copies; bench/handoff.py measured 4.3 to 5), beside the
# interpreter and its libraries.
IN_MEMORY_COPIES = 5
LIBRARIES_BYTES = 350 * 2**20
# SageMaker's limit on one hyperparameter value.
MAX_HYPERPARAMETER_CHARS = 2500
CONFIG_SECTIONS = ("model", "train", "gate", "export", "rollout", "signal")

# The job's contract with the function that starts it and the one that finishes it.
DATA_CHANNEL = "train"  # the run's uploads, from its manifest
CHAMPION_CHANNEL = "champion"  # the champion's estimator, for the warm start and the gate
REFERENCE_CHANNEL = "reference"  # the platform's reference set, when the config names one
RUN_ID = "edgeloop.run_id"
STREAM_ABOVE = "edgeloop.stream_above_bytes"
# The functions image's alternate command: SageMaker runs it instead of Lambda's entry point.
ENTRY_POINT = ("python3", "-m", "edgeloop.factory.job")


# The EventBridge event a training job's state change sends, and the states that end a
# job: the stack's rule, the completion function and the local cloud all say these.
DETAIL_TYPE = "SageMaker Training Job State Change"
FINAL_STATES = ("Completed", "Failed", "Stopped")


def run_prefix(model: str, run_id: str) -> str:
    """Where a handed-off run keeps its manifest and its job's output, in the data bucket."""
    return f"training/{model}/{run_id}/"


class HandOffError(ValueError):
    """What a training job was given cannot be read back (hyperparameters, manifest)."""


@dataclass(frozen=True)
class Estimate:
    """What a run is expected to take, and what it was estimated from."""

    decoded_bytes: int
    rows: int
    memory_bytes: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "decoded_bytes": self.decoded_bytes,
            "rows": self.rows,
            "memory_bytes": self.memory_bytes,
            "seconds": round(self.seconds, 1),
        }


@dataclass(frozen=True)
class Limits:
    """What a run may take inside the retrain function before it is handed off."""

    memory_bytes: int
    seconds: float

    def __post_init__(self) -> None:
        if self.memory_bytes <= 0 or self.seconds <= 0:
            raise ValueError(f"hand-off limits must be positive, got {self}")

    def exceeded(self, estimate: Estimate) -> str | None:
        """Why `estimate` does not fit, or None when it does."""
        reasons = []
        if estimate.memory_bytes > self.memory_bytes:
            reasons.append(
                f"an estimated {estimate.memory_bytes / 2**20:,.0f} MiB of memory, above the "
                f"{self.memory_bytes / 2**20:,.0f} MiB limit"
            )
        if estimate.seconds > self.seconds:
            reasons.append(
                f"an estimated {estimate.seconds:,.0f} s of training, above the "
                f"{self.seconds:,.0f} s limit"
            )
        return "; ".join(reasons) or None


def _flops_per_row(config: ModelConfig) -> float:
    """Floating-point work per row over the whole fit: an upper bound from the params."""
    params = config.estimator_params()
    width = config.model.n_features
    classes = max(2, len(config.model.classes) or 2)
    if isinstance(params, MLPParams):
        layers = [width, *params.hidden_layer_sizes, classes]
        weights = sum(a * b for a, b in itertools.pairwise(layers))
        # Forward and backward passes, about three multiply-adds per weight, every epoch.
        return 6.0 * weights * params.max_iter
    if isinstance(params, LogisticParams):
        # L-BFGS: a gradient (two passes over X against the coefficients) per iteration.
        return 4.0 * width * classes * params.max_iter
    assert isinstance(params, KMeansParams)
    # Distances to every centroid, each initialisation, each iteration.
    return 3.0 * width * params.n_clusters * params.n_init * params.max_iter


def estimate_run(
    config: ModelConfig, decoded_bytes: int, *, streamed: bool = False, largest_upload: int = 0
) -> Estimate:
    """Memory and time a run over `decoded_bytes` of decoded uploads is expected to take.

    A `streamed` run (a kind that streams, above the threshold: stream.trains_streamed)
    holds one upload at a time, `largest_upload` decoded bytes at most, whatever
    the data: only its time grows. Every other run holds all its rows.
    """
    if decoded_bytes < 0 or largest_upload < 0:
        raise ValueError(f"byte counts must be >= 0, got {decoded_bytes}, {largest_upload}")
    labels = 1 if config.is_classifier else 0
    rows = decoded_bytes // (8 * (config.model.n_features + labels))
    held = min(largest_upload, decoded_bytes) if streamed else decoded_bytes
    return Estimate(
        decoded_bytes=decoded_bytes,
        rows=rows,
        memory_bytes=LIBRARIES_BYTES + IN_MEMORY_COPIES * held,
        seconds=rows * _flops_per_row(config) / FLOPS_PER_SECOND,
    )


def config_hyperparameters(config: ModelConfig) -> dict[str, str]:
    """The model config as SageMaker hyperparameters: one JSON value per section.

    One value per section keeps each under SageMaker's 2,500 characters.
    """
    doc = config.to_dict()
    out = {f"config.{section}": json.dumps(doc[section], sort_keys=True) for section in doc}
    for key, value in out.items():
        if len(value) > MAX_HYPERPARAMETER_CHARS:
            raise HandOffError(
                f"{key} is {len(value)} characters as JSON; SageMaker takes at most "
                f"{MAX_HYPERPARAMETER_CHARS} per hyperparameter"
            )
    return out


def config_from_hyperparameters(hyperparameters: Mapping[str, str]) -> ModelConfig:
    """The model config a job was started with, checked as a config file is."""
    doc: dict[str, Any] = {}
    for section in CONFIG_SECTIONS:
        raw = hyperparameters.get(f"config.{section}")
        if raw is None:
            continue
        try:
            doc[section] = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise HandOffError(f"hyperparameter config.{section} is not JSON: {exc.msg}") from exc
    if "model" not in doc:
        raise HandOffError("the hyperparameters carry no config.model")
    return parse_config(doc, source="hyperparameters")


def manifest_body(bucket: str, keys: Sequence[str]) -> bytes:
    """A SageMaker manifest file naming exactly these objects of `bucket`.

    The job's channel then holds those objects and nothing else under the
    bucket, at their keys relative to the bucket (`data/{model}/{thing}/...`).
    """
    if not keys:
        raise HandOffError("a training job needs at least one object in its manifest")
    return json.dumps([{"prefix": f"s3://{bucket}/"}, *keys]).encode()


def manifest_keys(body: bytes) -> tuple[str, list[str]]:
    """The prefix and the relative keys a manifest names (what SageMaker downloads)."""
    try:
        doc = json.loads(body)
        prefix = doc[0]["prefix"]
        keys = doc[1:]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise HandOffError(f"not a SageMaker manifest file: {exc}") from exc
    if not isinstance(prefix, str) or not all(isinstance(k, str) for k in keys):
        raise HandOffError("a manifest's prefix and keys must be strings")
    return prefix, list(keys)
