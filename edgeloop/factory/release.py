"""A promoted model as a release: its manifest and the files it names (pure; the
fleet's TUF repository signs them, edgeloop.trust).

Paths are the TUF target paths of edgeloop.contract.trust_targets, so the
manifest the cloud keeps of a version and the one a device assembles from
verified targets name the same files.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edgeloop.contract import (
    ArtifactRef,
    CompressedRef,
    DeltaRef,
    HealthCheck,
    Manifest,
    TensorSpec,
    WindowSpec,
    sha256_hex,
)
from edgeloop.contract.trust_targets import compressed_path, model_path, patch_path
from edgeloop.factory.config import ModelConfig
from edgeloop.factory.deltas import DeltaPlan


def build_release(
    config: ModelConfig,
    version: int,
    tflite: bytes,
    plan: DeltaPlan,
    record: dict[str, Any],
    now: datetime | None = None,
) -> tuple[Manifest, dict[str, bytes]]:
    """What a device needs to fetch, check and judge this version, and the bytes of
    every file it names (the model, its zstd form, a patch from each planned base)."""
    model = config.model.name
    files = {model_path(model, version): tflite}
    deltas = []
    for p in plan.patches:
        path = patch_path(model, p.from_version, version, p.codec)
        deltas.append(DeltaRef(p.from_version, p.from_sha256, p.codec, path, p.sha256, p.size))
        files[path] = p.data
    packed = plan.compressed_full
    zst = compressed_path(model, version, "zstd")
    files[zst] = packed
    health = record["health_check"]
    outputs = record["output_names"]
    manifest = Manifest.new(
        model=model,
        version=version,
        # A signal model's input is a raw window (window x channels values), not features.
        input=TensorSpec(shape=(-1, config.input_width), names=config.model.feature_names),
        output=TensorSpec(
            shape=(-1, len(outputs)) if config.is_classifier else (-1,), names=tuple(outputs)
        ),
        artifact=ArtifactRef(
            model_path(model, version),
            sha256_hex(tflite),
            len(tflite),
            CompressedRef("zstd", zst, sha256_hex(packed), len(packed)),
        ),
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
        window=window_spec(config),
        upload_sample_rate=upload_request(config, record["metrics"]),
    )
    return manifest, files


def upload_request(config: ModelConfig, metrics: dict[str, float]) -> float | None:
    """The share of samples this version asks its devices for: `collect.sample_rate`
    while its gate metric is under `collect.goal`, else nothing (their own setting)."""
    c = config.collect
    if c is None:
        return None
    value = metrics.get(config.gate.metric)
    return c.sample_rate if value is not None and value < c.goal else None


def window_spec(config: ModelConfig) -> WindowSpec | None:
    """What a device needs to cut its live stream into this model's input rows."""
    s = config.signal
    if s is None:
        return None
    return WindowSpec(channels=s.channels, sample_rate=s.sample_rate, window=s.window, hop=s.hop)
