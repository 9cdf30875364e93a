"""Publishing a promoted model: the fleet's TUF repository, and the registry's own copies.

Devices get a version only through the TUF repository in the artifact bucket
(edgeloop.trust, served by the CDN under `models/`): the model, its zstd form,
patches from earlier versions, its spec and golden inputs, all signed by the
online KMS key in the model's role. The registry bucket keeps what the cloud
itself reads again (never served):
    registry/{model}/versions/{version}/model.tflite      a base for later patches,
    registry/{model}/versions/{version}/manifest.json     and what a rollback republishes
    registry/{model}/versions/{version}/estimator.joblib  the warm start of the next run
Written with If-None-Match: a version is never rewritten.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeloop.contract import Manifest, parse_manifest
from edgeloop.factory.config import ModelConfig
from edgeloop.factory.deltas import DeltaPlan, plan_deltas
from edgeloop.factory.release import build_release
from edgeloop.trust import TrustRepository, VersionRelease
from functions.common.registry import Registry
from functions.common.storage import ObjectMissing, ObjectStore

if TYPE_CHECKING:
    # Only annotations: the light functions import this module for the rollback's
    # wiring and must not pay for scikit-learn at cold start.
    from edgeloop.factory.training import TrainedModel


def version_key(model: str, version: int, name: str) -> str:
    return f"registry/{model}/versions/{version}/{name}"


def estimator_key(model: str, version: int) -> str:
    return version_key(model, version, "estimator.joblib")


@dataclass(frozen=True)
class Publication:
    manifest: Manifest
    plan: DeltaPlan


@dataclass(frozen=True)
class ReleaseWriter:
    """Writes versions of one deployment's models. The only code that publishes them."""

    store: ObjectStore
    registry: Registry
    # Built on first use: it reads the trusted root from the bucket.
    trust: Callable[[], TrustRepository]
    registry_bucket: str
    delta_bases: int

    def _bases(self, model: str) -> dict[int, bytes]:
        bases = {}
        for record in self.registry.published_versions(model, self.delta_bases):
            version = int(record["version"])
            try:
                bases[version] = self.store.get(
                    self.registry_bucket, version_key(model, version, "model.tflite")
                )
            except ObjectMissing:
                continue  # a removed version simply gets no patch
        return bases

    def publish(
        self,
        config: ModelConfig,
        tflite: bytes,
        trained: TrainedModel,
        record: dict[str, Any],
        run_id: str,
    ) -> Publication:
        model = config.model.name
        version = self.registry.claim_next_version(model, {"run_id": run_id})
        plan = plan_deltas(tflite, self._bases(model))
        manifest, files = build_release(config, version, tflite, plan, record)
        for name, data in (("model.tflite", tflite), ("manifest.json", manifest.to_bytes())):
            self.store.put(
                self.registry_bucket, version_key(model, version, name), data, immutable=True
            )
        self._save_estimator(model, version, trained)
        # Signed last: a device is never offered a version the registry cannot patch
        # from or roll back to.
        self.trust().publish(VersionRelease.of(manifest, files))
        self.registry.publish_version(
            model,
            version,
            {
                "run_id": run_id,
                "sha256": manifest.artifact.sha256,
                "size": manifest.artifact.size,
                "deltas": [d.to_json() for d in manifest.deltas],
                "compressed_full_size": plan.compressed_full_size,
            },
        )
        self.registry.set_champion(model, version, {"run_id": run_id})
        return Publication(manifest, plan)

    def _save_estimator(self, model: str, version: int, trained: TrainedModel) -> None:
        import joblib

        buffer = io.BytesIO()
        joblib.dump(trained, buffer)
        self.store.put(
            self.registry_bucket, estimator_key(model, version), buffer.getvalue(), immutable=True
        )

    def champion_model(self, model: str) -> TrainedModel | None:
        """The current champion's estimator, from the private registry bucket."""
        import joblib

        champion = self.registry.champion(model)
        if champion is None:
            return None
        raw = self.store.get(self.registry_bucket, estimator_key(model, int(champion["version"])))
        trained: TrainedModel = joblib.load(io.BytesIO(raw))
        return trained

    def rollback(self, config: ModelConfig, to_version: int, run_id: str) -> Publication:
        """Republish an earlier version's weights as a new, higher version.

        Devices refuse lower versions, so going back means going forward with old bytes.
        """
        model = config.model.name
        old = parse_manifest(
            self.store.get(self.registry_bucket, version_key(model, to_version, "manifest.json"))
        )
        tflite = self.store.get(
            self.registry_bucket, version_key(model, to_version, "model.tflite")
        )
        raw_estimator = self.store.get(self.registry_bucket, estimator_key(model, to_version))
        import joblib

        trained: TrainedModel = joblib.load(io.BytesIO(raw_estimator))
        check = old.health_checks[0]
        record = {
            "health_check": check.to_json(),
            "output_names": list(old.output.names) or ["anomaly_score"],
            "metrics": {**old.metrics, "rollback_of": float(to_version)},
            "decision_threshold": old.decision_threshold,
            "stats": dict(old.stats),
        }
        return self.publish(config, tflite, trained, record, run_id)
