"""The manifest for a promoted model, built from its run record (pure; signing is separate)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from edgeloop.contract import (
    ArtifactRef,
    CompressedRef,
    DeltaRef,
    HealthCheck,
    Manifest,
    TensorSpec,
    sha256_hex,
)
from edgeloop.factory.config import ModelConfig
from edgeloop.factory.deltas import DeltaPlan


def version_prefix(model: str, version: int) -> str:
    return f"models/{model}/{version}/"


def manifest_key(model: str, version: int) -> str:
    return version_prefix(model, version) + "manifest.json"


def delta_files(model: str, version: int, plan: DeltaPlan) -> list[tuple[DeltaRef, bytes]]:
    """Where each planned patch is published, and its bytes."""
    prefix = version_prefix(model, version)
    files = []
    for p in plan.patches:
        path = f"{prefix}from-{p.from_version}.{p.codec}"
        files.append(
            (DeltaRef(p.from_version, p.from_sha256, p.codec, path, p.sha256, p.size), p.data)
        )
    return files


def compressed_file(model: str, version: int, plan: DeltaPlan) -> tuple[CompressedRef, bytes]:
    """Where the zstd-compressed full artifact is published, and its bytes."""
    data = plan.compressed_full
    path = version_prefix(model, version) + "model.tflite.zst"
    return CompressedRef("zstd", path, sha256_hex(data), len(data)), data


def build_manifest(
    config: ModelConfig,
    version: int,
    tflite: bytes,
    deltas: Sequence[DeltaRef],
    record: dict[str, Any],
    valid_for: timedelta,
    now: datetime | None = None,
    compressed: CompressedRef | None = None,
) -> Manifest:
    """What a device needs to accept, fetch, check and judge this version."""
    model = config.model.name
    health = record["health_check"]
    outputs = record["output_names"]
    return Manifest.new(
        model=model,
        version=version,
        input=TensorSpec(shape=(-1, config.model.n_features), names=config.model.feature_names),
        output=TensorSpec(
            shape=(-1, len(outputs)) if config.is_classifier else (-1,), names=tuple(outputs)
        ),
        artifact=ArtifactRef(
            version_prefix(model, version) + "model.tflite",
            sha256_hex(tflite),
            len(tflite),
            compressed,
        ),
        valid_for=valid_for,
        now=now,
        deltas=tuple(deltas),
        metrics={k: v for k, v in record["metrics"].items() if k != "holdout_rows"},
        decision_threshold=record.get("decision_threshold"),
        health_checks=(
            HealthCheck(
                inputs=tuple(tuple(r) for r in health["inputs"]),
                expected=tuple(tuple(r) for r in health["expected"]),
                tolerance=health["tolerance"],
            ),
        ),
        stats=record.get("stats") or {},
    )
