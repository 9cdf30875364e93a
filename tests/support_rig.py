"""An update rig: a real artifact server, real signed releases, a real store and interpreter."""

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
from edge.updater import Updater
from edgeloop.contract import Step, TensorSpec, TrustedKeys
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

    def fetcher(self) -> HttpFetcher:
        return HttpFetcher(self.server.base_url, timeout=self.timeout, retries=2, backoff=0.01)

    def record(self, step: Step, version: int | None, detail: str) -> None:
        if step == self.power_cut_at:
            raise PowerCut(f"power lost at {step}")
        self.reports.append((step, version, detail))

    def updater(self, **overrides: object) -> Updater:
        options: dict[str, object] = {
            "model": "vibration",
            "store": self.store,
            "scorer": self.scorer,
            "trusted": TrustedKeys([self.releases.signer.public_key()]),
            "sources": model_sources(self.fetcher(), self.store.staging, 1 << 24),
            "device_input": TensorSpec(shape=(-1, 8)),
            "report": self.record,
            "max_bytes": 1 << 24,
        }
        options.update(overrides)
        return Updater(**options)  # type: ignore[arg-type]

    def steps(self) -> list[str]:
        return [step for step, _, _ in self.reports]

    def reopen(self) -> ModelStore:
        """The store as a restarted agent finds it."""
        return ModelStore(self.root / "models")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with artifact_server() as server:
        yield Rig(tmp_path, server, Releases(server), ModelStore(tmp_path / "models"), Scorer(0.6))


def install_v1(rig: Rig) -> None:
    v1, _, _ = vibration_runs()
    assert rig.updater().handle(rig.releases.release(1, v1)).step == "succeeded"
    assert rig.scorer.model is not None
    rig.reports.clear()


def assert_serving(rig: Rig, version: int) -> None:
    model = rig.scorer.model
    assert model is not None
    assert model.version == version
    assert rig.store.current() is not None
    assert rig.store.current().version == version  # type: ignore[union-attr]
    assert model.runtime.predict(np.zeros((2, 8), dtype=np.float32)).shape == (2,)
