"""Publishing a promoted model: versioned artifacts, patches, a signed manifest, the pointer.

Layout in the artifact bucket (served by CloudFront under `models/`):
    models/{model}/{version}/model.tflite
    models/{model}/{version}/from-{base}.{codec}
    models/{model}/{version}/manifest.json
    models/{model}/latest.json            (the only mutable object)
Version directories are written with If-None-Match: a version is never rewritten.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from edgeloop.contract import Manifest
from edgeloop.contract.signers import Signer, sign_manifest
from edgeloop.factory.config import ModelConfig
from edgeloop.factory.deltas import DeltaPlan, plan_deltas
from edgeloop.factory.release import (
    build_manifest,
    compressed_file,
    delta_files,
    manifest_key,
    version_prefix,
)
from functions.common.registry import Registry
from functions.common.storage import ObjectMissing, ObjectStore

if TYPE_CHECKING:
    # Only annotations: the light functions import this module for the rollback's
    # wiring and must not pay for scikit-learn at cold start.
    from edgeloop.factory.training import TrainedModel


def estimator_key(model: str, version: int) -> str:
    return f"registry/{model}/versions/{version}/estimator.joblib"


@dataclass(frozen=True)
class Publication:
    manifest: Manifest
    manifest_bytes: bytes
    plan: DeltaPlan


@dataclass(frozen=True)
class ReleaseWriter:
    """Writes versions of one deployment's models. The only code that signs manifests."""

    store: ObjectStore
    registry: Registry
    signer: Signer
    artifact_bucket: str
    registry_bucket: str
    delta_bases: int
    manifest_ttl: timedelta

    def _bases(self, model: str) -> dict[int, bytes]:
        bases = {}
        for record in self.registry.published_versions(model, self.delta_bases):
            version = int(record["version"])
            try:
                bases[version] = self.store.get(
                    self.artifact_bucket, version_prefix(model, version) + "model.tflite"
                )
            except ObjectMissing:
                continue  # an expired or removed version simply gets no patch
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
        prefix = version_prefix(model, version)
        self.store.put(self.artifact_bucket, prefix + "model.tflite", tflite, immutable=True)
        plan = plan_deltas(tflite, self._bases(model))
        deltas = []
        for ref, data in delta_files(model, version, plan):
            self.store.put(self.artifact_bucket, ref.path, data, immutable=True)
            deltas.append(ref)
        compressed, compressed_data = compressed_file(model, version, plan)
        self.store.put(self.artifact_bucket, compressed.path, compressed_data, immutable=True)
        manifest = build_manifest(
            config, version, tflite, deltas, record, self.manifest_ttl, compressed=compressed
        )
        signed = sign_manifest(manifest, self.signer)
        raw = signed.to_bytes()
        self.store.put(
            self.artifact_bucket,
            manifest_key(model, version),
            raw,
            content_type="application/json",
            immutable=True,
        )
        self._save_estimator(model, version, trained)
        self.store.put(
            self.artifact_bucket,
            f"models/{model}/latest.json",
            json.dumps({"version": version, "manifest": manifest_key(model, version)}).encode(),
            content_type="application/json",
        )
        self.registry.publish_version(
            model,
            version,
            {
                "run_id": run_id,
                "sha256": signed.artifact.sha256,
                "size": signed.artifact.size,
                "manifest": manifest_key(model, version),
                "deltas": [d.to_json() for d in deltas],
                "compressed_full_size": plan.compressed_full_size,
            },
        )
        self.registry.set_champion(model, version, {"run_id": run_id})
        return Publication(signed, raw, plan)

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
        old_raw = self.store.get(self.artifact_bucket, manifest_key(model, to_version))
        old = json.loads(old_raw)
        tflite = self.store.get(self.artifact_bucket, old["artifact"]["path"])
        raw_estimator = self.store.get(self.registry_bucket, estimator_key(model, to_version))
        import joblib

        trained: TrainedModel = joblib.load(io.BytesIO(raw_estimator))
        hc = old["health_checks"][0]
        record = {
            "health_check": {
                "inputs": hc["inputs"],
                "expected": hc["expected"],
                "tolerance": hc["tolerance"],
            },
            "output_names": old["output"]["names"] or ["anomaly_score"],
            "metrics": {**old["metrics"], "rollback_of": float(to_version)},
            "decision_threshold": old["decision_threshold"],
            "stats": old["stats"],
        }
        return self.publish(config, tflite, trained, record, run_id)
