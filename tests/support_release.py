"""Signed releases of real models, served by a real HTTP server, for the agent's tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cache

from edgeloop.contract import Manifest
from edgeloop.contract.signers import LocalSigner, sign_manifest
from edgeloop.factory.deltas import plan_deltas
from edgeloop.factory.release import build_manifest, compressed_file, delta_files, version_prefix
from edgeloop.factory.run import RunResult, train_run
from tests.factories import as_dataset, kmeans_config, planted_outliers
from tests.support_http import ArtifactServer

CONFIG = kmeans_config(threshold=0.3, n_clusters=4)


@cache
def vibration_runs() -> tuple[RunResult, RunResult, RunResult]:
    """Three successive warm-started k-means models on growing data."""
    first, _ = planted_outliers(1500, seed=11, outlier_share=0.005)
    v1 = train_run(CONFIG, as_dataset(first))
    more, _ = planted_outliers(3000, seed=12, outlier_share=0.005)
    v2 = train_run(CONFIG, as_dataset(more), v1.model)
    most, _ = planted_outliers(6000, seed=13, outlier_share=0.005)
    v3 = train_run(CONFIG, as_dataset(most), v2.model)
    for run in (v1, v2, v3):
        assert run.tflite is not None
    return v1, v2, v3


@dataclass
class Releases:
    server: ArtifactServer
    signer: LocalSigner = field(default_factory=LocalSigner.generate)
    models: dict[int, bytes] = field(default_factory=dict)

    def release(
        self,
        version: int,
        run: RunResult,
        bases: Sequence[int] = (),
        valid_for: timedelta = timedelta(days=1),
        now: datetime | None = None,
        mutate: Callable[[Manifest], Manifest] | None = None,
        signer: LocalSigner | None = None,
        compressed: bool = False,
    ) -> bytes:
        """Publish `run` as `version`; with `compressed`, a zstd full artifact too
        (without it, the manifest is one from a cloud that publishes none)."""
        assert run.tflite is not None
        tflite = run.tflite
        prefix = version_prefix(CONFIG.model.name, version)
        self.server.files[prefix + "model.tflite"] = tflite
        self.models[version] = tflite
        plan = plan_deltas(tflite, {v: self.models[v] for v in bases})
        deltas = []
        for ref, data in delta_files(CONFIG.model.name, version, plan):
            self.server.files[ref.path] = data
            deltas.append(ref)
        packed = None
        if compressed:
            packed, packed_data = compressed_file(CONFIG.model.name, version, plan)
            self.server.files[packed.path] = packed_data
        manifest = build_manifest(
            CONFIG, version, tflite, deltas, run.record, valid_for, now, packed
        )
        if mutate is not None:
            manifest = mutate(manifest)
        return sign_manifest(manifest, signer or self.signer).to_bytes()


def with_fields(**changes: object) -> Callable[[Manifest], Manifest]:
    return lambda m: replace(m, **changes)  # type: ignore[arg-type]
