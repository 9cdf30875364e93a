"""A TUF repository in a directory, served by the test CDN, and devices refreshing from it.

Real keys and real signatures throughout: three root keys in files, an online
key (local here; tests/integration/test_trust_kms.py signs with KMS on moto).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner, Signer

from edge.download import HttpFetcher
from edge.targets import InstalledModel
from edge.trust import SignedRepository, TrustLimits
from edgeloop.contract import sha256_hex
from edgeloop.contract.trust_targets import RolloutPointer
from edgeloop.trust.keys import generate_root_key
from edgeloop.trust.repository import (
    PatchRelease,
    RootCeremony,
    TrustRepository,
    VersionRelease,
    utc_now,
)
from edgeloop.trust.store import DirectoryStore
from tests.support_http import ArtifactServer, artifact_server

PREFIX = "models/"


def model_bytes(version: int, size: int = 3000) -> bytes:
    return bytes((i * 7 + version) % 251 for i in range(size))


def release(
    model: str, version: int, golden: bytes = b'{"inputs": [[0.5, 0.25]]}'
) -> VersionRelease:
    patches: tuple[PatchRelease, ...] = ()
    if version > 1:
        base = model_bytes(version - 1)
        patches = (PatchRelease(version - 1, sha256_hex(base), "bsdiff4", b"patch" * 10),)
    return VersionRelease(
        model=model,
        version=version,
        model_bytes=model_bytes(version),
        custom={"input": {"shape": [1, 2], "dtype": "float32"}, "expected": [["1.0"]]},
        compressed={"zstd": model_bytes(version)[:500]},
        patches=patches,
        golden=golden,
    )


@dataclass
class Clock:
    now: datetime = field(default_factory=utc_now)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class TrustWorld:
    tmp: Path
    store: DirectoryStore
    cdn: ArtifactServer
    root_keys: list[CryptoSigner]
    online: Signer
    clock: Clock
    devices: int = 0

    def repo(self, online: Signer | None = None) -> TrustRepository:
        return TrustRepository(self.store, online or self.online, clock=self.clock)

    def ceremony(self) -> RootCeremony:
        return RootCeremony(self.store, clock=self.clock)

    def sync(self) -> None:
        """What the CDN serves is what the store holds now (a test may hold it back)."""
        for key in self.store.list("tuf/"):
            data = self.store.get(key)
            assert data is not None
            self.cdn.files[PREFIX + key] = data

    def shipped_root(self) -> bytes:
        data = self.store.get("tuf/metadata/1.root.json")
        assert data is not None
        return data

    def device(self, root: bytes | None = None, **limits: float) -> SignedRepository:
        self.devices += 1
        http = HttpFetcher(self.cdn.base_url + PREFIX, timeout=2.0, retries=0)
        return SignedRepository(
            http,
            root or self.shipped_root(),
            self.tmp / f"device-{self.devices}",
            limits=TrustLimits(min_refresh_seconds=limits.get("min_refresh_seconds", 0.0)),
        )

    def publish(self, model: str, version: int, percent: int = 100) -> None:
        repo = self.repo()
        repo.publish(release(model, version))
        previous = version - 1 if version > 1 else None
        repo.set_pointer(RolloutPointer(model, offered=version, previous=previous, percent=percent))
        self.sync()


def installed(version: int) -> InstalledModel:
    return InstalledModel(version, sha256_hex(model_bytes(version)))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[TrustWorld]:
    store = DirectoryStore(tmp_path / "bucket")
    keys = [generate_root_key(tmp_path / "keys" / f"root-{i}.pem", None) for i in range(3)]
    online = CryptoSigner.generate_ecdsa()
    clock = Clock()
    RootCeremony(store, clock=clock).init(keys, 2, online.public_key)
    with artifact_server() as cdn:
        w = TrustWorld(tmp_path, store, cdn, keys, online, clock)
        w.repo().resign_due()
        w.sync()
        yield w


def later(clock: Clock, **delta: float) -> None:
    clock.now += timedelta(**delta)
