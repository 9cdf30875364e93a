"""A world for agent tests: a broker, a CDN stand-in, a TUF repository of real releases,
a cloud stand-in."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.agent import Agent
from edge.config import load_agent_config
from edge.download import HttpFetcher
from edge.sources import Sample
from edgeloop.contract import Manifest
from edgeloop.factory.run import RunResult
from tests.support_broker import EmbeddedAmqtt, Mosquitto, start_broker
from tests.support_cloud import CloudStandIn
from tests.support_http import ArtifactServer, artifact_server
from tests.support_release import Releases

VIBRATION_TOML = """
[model]
name = "vibration"
kind = "kmeans_anomaly"
n_features = 8
[gate]
metric = "silhouette"
threshold = 0.3
"""


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class World:
    def __init__(
        self, tmp: Path, broker: Mosquitto | EmbeddedAmqtt, server: ArtifactServer, moto: str
    ) -> None:
        self.tmp, self.broker, self.server = tmp, broker, server
        self.releases = Releases(server, tmp / "cloud")
        (tmp / "root.json").write_bytes(self.releases.root)
        (tmp / "models").mkdir()
        (tmp / "models" / "vibration.toml").write_text(VIBRATION_TOML)
        self.cloud = CloudStandIn(broker.url, moto, f"data-{uuid.uuid4().hex[:8]}", tmp / "models")
        self.agents: list[Agent] = []

    def publish(self, version: int, run: RunResult, **options: Any) -> Manifest:
        """What a rollout that reached every device does: sign the version and the pointer
        naming it, then nudge every band."""
        manifest = self.releases.release(version, run, **options)
        self.cloud.nudge("vibration", version)
        return manifest

    def config_file(self, thing: str, **sections: str) -> Path:
        path = self.tmp / f"{thing}.toml"
        extra = "\n".join(f"[{name}]\n{body}" for name, body in sections.items())
        path.write_text(
            f'[device]\nthing = "{thing}"\nmodel = "vibration"\nn_features = 8\n'
            f'[broker]\nurl = "{self.broker.url}"\nreconnect_min = 0.05\nreconnect_max = 0.5\n'
            f'[artifacts]\nbase_url = "{self.server.base_url}"\n'
            f"timeout = 2.0\nretries = 3\n"
            '[trust]\nroot = "root.json"\nmin_refresh_seconds = 0.0\n'
            f'[state]\ndir = "state-{thing}"\n{extra}\n'
        )
        return path

    def agent(
        self,
        thing: str,
        source: Iterator[Sample] | None = None,
        http: HttpFetcher | None = None,
        **sections: str,
    ) -> Agent:
        self.cloud.enroll(thing, "vibration")
        config = load_agent_config(self.config_file(thing, **sections))
        agent = Agent(config, source=source, http=http)
        self.agents.append(agent)
        return agent

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.cloud.close()


@pytest.fixture
def world(tmp_path: Path, moto_endpoint: str) -> Iterator[World]:
    broker = start_broker()
    with artifact_server() as server:
        w = World(tmp_path, broker, server, moto_endpoint)
        try:
            yield w
        finally:
            w.close()
            broker.close()


def _status(world: World, thing: str) -> dict[str, Any]:
    return world.cloud.last_status(thing) or {}
