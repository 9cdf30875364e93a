"""An update rig: a real CDN stand-in, a real TUF repository of real releases, a real
store and interpreter, and the device's refresh over the agent's HTTP fetcher."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from edge.download import HttpFetcher
from edge.model_sources import model_sources
from edge.scoring import Scorer
from edge.store import ModelStore
from edge.trust import SignedRepository, TrustLimits
from edge.updater import Updater
from edgeloop.contract import Step, TensorSpec
from edgeloop.contract.trust_targets import REPOSITORY_PREFIX
from tests.support_http import ArtifactServer, artifact_server
from tests.support_release import Releases, vibration_runs


class PowerCut(BaseException):
    """The process stops dead here. A BaseException, so no `except Exception` in the
    agent can catch it: like a real power cut, nothing after it runs."""


@dataclass
class Rig:
    root: Path
    server: ArtifactServer
    releases: Releases
    store: ModelStore
    scorer: Scorer
    reports: list[tuple[str, int | None, str]] = field(default_factory=list)
    # The power goes when the updater reaches this step (it reports each step
    # before taking it, so the cut lands between two steps, as one would).
    power_cut_at: Step | None = None
    timeout: float = 2.0
    thing: str = "pump-1"

    def fetcher(self) -> HttpFetcher:
        return HttpFetcher(
            self.server.base_url + REPOSITORY_PREFIX, timeout=self.timeout, retries=2, backoff=0.01
        )

    def repository(self, root: bytes | None = None) -> SignedRepository:
        """The device's view of the repository; its trusted metadata persists on disk."""
        return SignedRepository(
            self.fetcher(),
            root or self.releases.root,
            self.root / "trust",
            limits=TrustLimits(min_refresh_seconds=0.0),
            staging=self.store.staging,
        )

    def record(self, step: Step, version: int | None, detail: str) -> None:
        if step == self.power_cut_at:
            raise PowerCut(f"power lost at {step}")
        self.reports.append((step, version, detail))

    def updater(self, **overrides: object) -> Updater:
        repository = overrides.pop("repository", None) or self.repository()
        options: dict[str, object] = {
            "model": "vibration",
            "thing": self.thing,
            "store": self.store,
            "scorer": self.scorer,
            "repository": repository,
            "sources": model_sources(
                repository,  # type: ignore[arg-type]
                1 << 24,
                held=lambda: (self.store.previous(), self.store.current()),
            ),
            "device_input": TensorSpec(shape=(-1, 8)),
            "report": self.record,
            "max_bytes": 1 << 24,
        }
        options.update(overrides)
        return Updater(**options)  # type: ignore[arg-type]

    def key(self, version: int, name: str) -> str:
        """The CDN key of one of `version`'s files (model.tflite, from-1.wdiff, ...)."""
        return self.releases.target_key(f"vibration/{version}/{name}")

    def served(self, version: int, name: str) -> int:
        """How often the CDN served one of `version`'s files (0: it is not published)."""
        try:
            return self.server.served(self.key(version, name))
        except KeyError:
            return 0

    def steps(self) -> list[str]:
        return [step for step, _, _ in self.reports]

    def reopen(self) -> ModelStore:
        """The store as a restarted agent finds it."""
        return ModelStore(self.root / "models")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with artifact_server() as server:
        yield Rig(
            tmp_path,
            server,
            Releases(server, tmp_path / "cloud"),
            ModelStore(tmp_path / "models"),
            Scorer(0.6),
        )


def install_v1(rig: Rig) -> None:
    v1, _, _ = vibration_runs()
    rig.releases.release(1, v1)
    assert rig.updater().handle().step == "succeeded"
    assert rig.scorer.model is not None
    rig.reports.clear()


def assert_serving(rig: Rig, version: int) -> None:
    model = rig.scorer.model
    assert model is not None
    assert model.version == version
    assert rig.store.current() is not None
    assert rig.store.current().version == version  # type: ignore[union-attr]
    assert model.runtime.predict(np.zeros((2, 8), dtype=np.float32)).shape == (2,)
