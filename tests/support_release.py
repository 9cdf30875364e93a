"""Real releases of real models in a TUF repository (a directory) served by the test CDN.

Real keys and signatures: three root keys (two sign root) and a local online key,
as `edgeloop trust init` and KMS would give; the repository is exactly what the
release writer publishes (edgeloop.factory.release, edgeloop.trust).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache
from pathlib import Path

from securesystemslib.signer import CryptoSigner

from edgeloop.contract import Manifest
from edgeloop.contract.trust_targets import REPOSITORY_PREFIX, RolloutPointer, VersionSpec
from edgeloop.factory.config import ModelConfig
from edgeloop.factory.deltas import plan_deltas
from edgeloop.factory.release import build_release
from edgeloop.factory.run import RunResult, train_run
from edgeloop.trust import (
    DirectoryStore,
    PatchRelease,
    RootCeremony,
    TrustRepository,
    VersionRelease,
)
from edgeloop.trust.keys import generate_root_key
from edgeloop.trust.repository import utc_now
from tests.factories import as_dataset, kmeans_config, planted_outliers
from tests.support_http import ArtifactServer

CONFIG = kmeans_config(threshold=0.3, n_clusters=4)
MODEL = CONFIG.model.name


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
class Clock:
    now: datetime = field(default_factory=utc_now)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Releases:
    """The cloud of an update test: it publishes versions and moves the pointer."""

    server: ArtifactServer
    directory: Path
    online: CryptoSigner = field(default_factory=CryptoSigner.generate_ecdsa)
    clock: Clock = field(default_factory=Clock)
    models: dict[int, bytes] = field(default_factory=dict)
    root_keys: list[CryptoSigner] = field(default_factory=list)
    synced: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.store = DirectoryStore(self.directory / "bucket")
        self.root_keys = [
            generate_root_key(self.directory / "root-keys" / f"root-{i}.pem", None)
            for i in range(3)
        ]
        RootCeremony(self.store, clock=self.clock).init(self.root_keys, 2, self.online.public_key)
        self.repo().resign_due()
        self.sync()

    @property
    def root(self) -> bytes:
        """Root v1: what a device ships with."""
        data = self.store.get("tuf/metadata/1.root.json")
        assert data is not None
        return data

    def repo(self) -> TrustRepository:
        return TrustRepository(self.store, self.online, clock=self.clock)

    def sync(self) -> None:
        """The CDN serves what the bucket holds now (a test may hold it back or alter it);
        what left the bucket since the last sync leaves the CDN."""
        keys = set(self.store.list("tuf/"))
        for key in self.synced - keys:
            self.server.files.pop(REPOSITORY_PREFIX + key, None)
        for key in keys:
            data = self.store.get(key)
            assert data is not None
            self.server.files[REPOSITORY_PREFIX + key] = data
        self.synced = keys

    def release(
        self,
        version: int,
        run: RunResult,
        bases: Sequence[int] = (),
        now: datetime | None = None,
        mutate: Callable[[Manifest], Manifest] | None = None,
        compressed: bool = False,
        offer: bool = True,
        previous: int | None = None,
        packed: dict[str, bytes] | None = None,
        model_bytes: bytes | None = None,
        patches: tuple[PatchRelease, ...] | None = None,
        bare: bool = False,
        spec_mutate: Callable[[Manifest], Manifest] | None = None,
        config: ModelConfig = CONFIG,
    ) -> Manifest:
        """Publish `run` as `version` (patches from `bases`; with `compressed`, its zstd
        form too, or `packed`'s files by encoding) and, with `offer`, point every device
        at it. `model_bytes` signs other bytes than the run's as the model, `patches`
        other patches, and `bare` leaves out the spec and golden inputs: what a
        compromised or broken cloud could sign; `spec_mutate` changes only the spec.
        `config` is the model config the release is built from (a signal model's, say:
        it must name the same model)."""
        assert run.tflite is not None
        tflite = run.tflite
        self.models[version] = tflite
        plan = plan_deltas(tflite, {v: self.models[v] for v in bases})
        manifest, files = build_release(config, version, tflite, plan, run.record, now)
        if not compressed:
            manifest = replace(manifest, artifact=replace(manifest.artifact, compressed=None))
        if mutate is not None:
            manifest = mutate(manifest)
        release = VersionRelease.of(manifest, files)
        if packed is not None:
            release = replace(release, compressed=packed)
        if model_bytes is not None:
            release = replace(release, model_bytes=model_bytes)
        if patches is not None:
            release = replace(release, patches=patches)
        if bare:
            release = replace(release, spec=None, golden=None)
        if spec_mutate is not None:
            release = replace(release, spec=VersionSpec.of(spec_mutate(manifest)).to_bytes())
        self.repo().publish(release)
        if offer:
            self.point(version, previous)
        self.sync()
        return manifest

    def point(self, version: int, previous: int | None = None, percent: int = 100) -> None:
        self.repo().set_pointer(RolloutPointer(MODEL, version, previous, percent))
        self.sync()

    def ceremony(self) -> RootCeremony:
        return RootCeremony(self.store, clock=self.clock)

    def rotate_root_key(self, index: int) -> None:
        """Replace root key `index` as its holders would: two old and two new signatures."""
        ceremony = self.ceremony()
        new = CryptoSigner.generate_ecdsa()
        ceremony.replace_root_key(self.root_keys[index].public_key.keyid, new.public_key)
        others = [k for i, k in enumerate(self.root_keys) if i != index]
        self.root_keys[index] = new
        for key in (new, *others):
            ceremony.sign_pending(key)
        assert ceremony.pending() is None

    def rotate_online_key(self, resign: bool = True) -> CryptoSigner:
        """Root names a new online key; with `resign`, everything is signed again with it
        (the schedule's next run). Returns the retired key."""
        retired, self.online = self.online, CryptoSigner.generate_ecdsa()
        ceremony = self.ceremony()
        ceremony.replace_online_key(self.online.public_key)
        for key in self.root_keys[:2]:
            ceremony.sign_pending(key)
        if resign:
            self.repo().resign_due()
        self.sync()
        return retired

    def target_key(self, path: str) -> str:
        """The CDN key of a target: hash-prefixed, under the repository."""
        role = self.repo().model_role(path.split("/")[0])
        assert role is not None
        return REPOSITORY_PREFIX + "tuf/targets/" + role.targets[path].get_prefixed_paths()[0]


def with_fields(**changes: object) -> Callable[[Manifest], Manifest]:
    return lambda m: replace(m, **changes)  # type: ignore[arg-type]
