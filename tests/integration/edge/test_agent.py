"""The whole agent: a real broker, a real CDN stand-in, real presigned uploads to moto's S3."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.agent import Agent
from edge.config import AgentConfigError, load_agent_config
from edge.sources import Sample, synthetic_vibration
from edgeloop.contract import public_key_pem
from tests.support_broker import EmbeddedAmqtt, Mosquitto, start_broker
from tests.support_cloud import CloudStandIn
from tests.support_http import ArtifactServer, artifact_server
from tests.support_release import Releases, vibration_runs

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
        self.releases = Releases(server)
        (tmp / "keys").mkdir()
        (tmp / "keys" / "manifest.pem").write_bytes(
            public_key_pem(self.releases.signer.public_key())
        )
        (tmp / "models").mkdir()
        (tmp / "models" / "vibration.toml").write_text(VIBRATION_TOML)
        self.cloud = CloudStandIn(broker.url, moto, f"data-{uuid.uuid4().hex[:8]}", tmp / "models")
        self.agents: list[Agent] = []

    def config_file(self, thing: str, **sections: str) -> Path:
        path = self.tmp / f"{thing}.toml"
        extra = "\n".join(f"[{name}]\n{body}" for name, body in sections.items())
        path.write_text(
            f'[device]\nthing = "{thing}"\nmodel = "vibration"\nn_features = 8\nring = "canary"\n'
            f'[broker]\nurl = "{self.broker.url}"\nreconnect_min = 0.05\nreconnect_max = 0.5\n'
            f'[artifacts]\nbase_url = "{self.server.base_url}"\n'
            'manifest_keys = ["keys/manifest.pem"]\n'
            f"timeout = 2.0\nretries = 3\n"
            f'[state]\ndir = "state-{thing}"\n{extra}\n'
        )
        return path

    def agent(self, thing: str, source: Iterator[Sample] | None = None, **sections: str) -> Agent:
        agent = Agent(load_agent_config(self.config_file(thing, **sections)), source=source)
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


def test_a_retained_announcement_reaches_a_new_agent_which_updates(world: World) -> None:
    v1, v2, _ = vibration_runs()
    world.cloud.announce("vibration", "canary", world.releases.release(1, v1))
    agent = world.agent("pump-1", source=iter(()))
    agent.start()
    wait_for(lambda: agent.version == 1, what="v1 installed")
    world.cloud.announce("vibration", "canary", world.releases.release(2, v2, bases=[1]))
    wait_for(lambda: agent.version == 2, what="v2 installed")
    wait_for(
        lambda: (
            _status(world, "pump-1").get("target_version") == 2
            and _status(world, "pump-1").get("step") == "succeeded"
        ),
        what="report",
    )
    status = _status(world, "pump-1")
    assert (status["version"], status["health"], status["ring"]) == (2, "healthy", "canary")
    steps = [
        doc["step"]
        for t, doc in world.cloud.statuses
        if t == "pump-1" and doc["target_version"] == 2
    ]
    # "received" goes out before the version is known (target None).
    assert steps == [
        "verified",
        "downloading",
        "patching",
        "checking",
        "swapped",
        "persisted",
        "succeeded",
    ]
    assert world.server.served("models/vibration/2/model.tflite") == 0


def test_the_embedded_amqtt_broker_carries_the_loop_too(tmp_path: Path, moto_endpoint: str) -> None:
    broker = EmbeddedAmqtt()
    with artifact_server() as server:
        w = World(tmp_path, broker, server, moto_endpoint)
        try:
            v1, _, _ = vibration_runs()
            agent = w.agent("pump-1", source=iter(()))
            agent.start()
            assert agent.link.wait_connected(10)
            w.cloud.announce("vibration", "canary", w.releases.release(1, v1))
            wait_for(lambda: agent.version == 1, what="v1 over amqtt")
        finally:
            w.close()
            broker.close()


def test_a_scoring_loop_at_1000_samples_per_second_loses_nothing_during_a_swap(
    world: World,
) -> None:
    v1, v2, _ = vibration_runs()
    world.cloud.announce("vibration", "canary", world.releases.release(1, v1))
    agent = world.agent("pump-1", source=iter(()))
    agent.start(score=False)
    wait_for(lambda: agent.version == 1, what="v1 installed")
    samples = list(synthetic_vibration(8, 0.01, seed=3, count=6000))
    versions: list[int] = []
    pace = 1.0 / 1500  # 1,500 samples/s asked for
    world.cloud.announce("vibration", "canary", world.releases.release(2, v2, bases=[1]))
    start = time.monotonic()
    for i, sample in enumerate(samples):
        agent.process(sample)
        model = agent.scorer.model
        assert model is not None
        versions.append(model.version)
        delay = start + (i + 1) * pace - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.monotonic() - start
    assert agent.counters.scored == len(samples)
    assert agent.counters.scoring_errors == 0
    assert versions[0] == 1, "the swap happened while scoring"
    assert versions[-1] == 2, "the swap happened while scoring"
    assert versions == sorted(versions)
    assert len(samples) / elapsed >= 1000


def test_uploads_drop_from_everything_to_a_sample_once_a_model_runs(world: World) -> None:
    v1, _, _ = vibration_runs()
    agent = world.agent("pump-1", source=iter(()), upload="batch_rows = 100\nsample_rate = 0.05\n")
    agent.start(score=False)
    for sample in synthetic_vibration(8, 0.0, seed=4, count=500):
        agent.process(sample)
    assert agent.counters.uploaded_rows_without_model == 500
    world.cloud.announce("vibration", "canary", world.releases.release(1, v1))
    wait_for(lambda: agent.version == 1, what="v1")
    for sample in synthetic_vibration(8, 0.01, seed=5, count=4000):
        agent.process(sample)
    sampled = agent.counters.uploaded_rows_with_model
    assert agent.counters.alarms >= 20
    assert agent.counters.alarms <= sampled <= 0.05 * 4000 + agent.counters.alarms + 60
    wait_for(lambda: len(world.cloud.uploaded_keys()) >= 5, what="uploads in S3")
    assert all(k.startswith("data/vibration/pump-1/") for k in world.cloud.uploaded_keys())
    wait_for(lambda: len(world.cloud.events) > 0, what="alarm events")
    thing, event = world.cloud.events[0]
    assert (thing, event["kind"], event["version"]) == ("pump-1", "anomaly", 1)


def test_a_full_upload_queue_drops_the_oldest_and_counts_them(world: World) -> None:
    agent = world.agent(
        "pump-1", source=iter(()), upload="batch_rows = 10\nqueue_max_batches = 3\n"
    )
    # Not started: nothing is sent, so the queue fills.
    for sample in synthetic_vibration(8, 0.0, seed=6, count=100):
        agent.process(sample)
    assert len(agent.queue) == 3
    assert agent.queue.dropped == 7
    assert agent.status().dropped_batches == 7


def test_a_model_misbehaving_after_the_swap_is_rolled_back(world: World) -> None:
    v1, v2, _ = vibration_runs()
    world.cloud.announce("vibration", "canary", world.releases.release(1, v1))
    agent = world.agent("pump-1", source=iter(()), watch="window = 300\n")
    agent.start(score=False)
    wait_for(lambda: agent.version == 1, what="v1")

    def claims_rare_alarms(manifest):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        return replace(manifest, stats={**manifest.stats, "alarm_rate": 0.0001})

    world.cloud.announce(
        "vibration", "canary", world.releases.release(2, v2, bases=[1], mutate=claims_rare_alarms)
    )
    wait_for(lambda: agent.version == 2, what="v2 swapped in")
    for sample in synthetic_vibration(8, 0.3, seed=7, count=400):
        agent.process(sample)
    assert agent.version == 1
    wait_for(
        lambda: (world.cloud.last_status("pump-1") or {}).get("step") == "rolled_back",
        what="report",
    )
    status = _status(world, "pump-1")
    assert (status["health"], status["target_version"]) == ("degraded", 2)
    assert "alarms on" in status["detail"]
    assert agent.store.current().version == 1  # type: ignore[union-attr]
    # The retained announcement of v2 is not retried on this device.
    assert agent.updater.handle(world.releases.release(2, v2, bases=[1])).step == "failed"


def test_broker_down_then_back_reconnects_updates_and_loses_no_upload(world: World) -> None:
    v1, v2, _ = vibration_runs()
    world.cloud.announce("vibration", "canary", world.releases.release(1, v1))
    agent = world.agent("pump-1", source=iter(()), upload="batch_rows = 50\nretry_seconds = 0.1\n")
    agent.start(score=False)
    wait_for(lambda: agent.version == 1 and agent.link.connected, what="v1")
    world.broker.stop()
    wait_for(lambda: not agent.link.connected, what="disconnect")
    for sample in synthetic_vibration(8, 0.0, seed=8, count=5000):
        agent.process(sample)
    queued = agent.counters.batches_queued
    assert queued >= 3
    world.broker.start()
    world.cloud.announce("vibration", "canary", world.releases.release(2, v2, bases=[1]))
    wait_for(lambda: agent.link.connected, what="reconnect")
    wait_for(lambda: agent.version == 2, what="v2 after reconnect")
    wait_for(lambda: len(agent.queue) == 0, timeout=30, what="queue drained")
    assert len(world.cloud.uploaded_keys()) == queued
    assert agent.queue.dropped == 0
    assert agent.link.connections >= 2


def test_a_restarted_agent_scores_at_once_with_its_persisted_model(world: World) -> None:
    v1, _, _ = vibration_runs()
    world.cloud.announce("vibration", "canary", world.releases.release(1, v1))
    first = world.agent("pump-1", source=iter(()))
    first.start(score=False)
    wait_for(lambda: first.version == 1, what="v1")
    first.stop()
    world.agents.remove(first)
    world.broker.stop()  # no network at all on restart
    again = world.agent("pump-1", source=iter(()))
    again.restore()
    assert again.version == 1
    assert again.process(Sample(np.full(8, 25.0, dtype=np.float32))) is True


@pytest.mark.parametrize(
    ("section", "body", "named"),
    [
        ("device", 'thing = "a/b"\nmodel = "vibration"\nn_features = 8\n', "thing name"),
        ("upload", "sample_rate = 2.0\n", "upload.sample_rate"),
        ("upload", "batch_rowz = 5\n", "upload.batch_rowz: unknown key"),
        ("source", 'kind = "camera"\n', "source.kind"),
        ("watch", "window = 0\n", "watch.window"),
    ],
)
def test_a_bad_agent_config_names_the_key(
    world: World, section: str, body: str, named: str
) -> None:
    path = world.config_file("pump-1", **({section: body} if section != "device" else {}))
    if section == "device":
        text = path.read_text().split("[broker]", 1)[1]
        path.write_text(f"[device]\n{body}[broker]{text}")
    with pytest.raises(AgentConfigError, match=named.replace(".", r"\.")):
        load_agent_config(path)


def test_an_agent_process_killed_mid_download_restarts_on_a_complete_model(world: World) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys

    from tests.support_http import Fault

    v1, v2, _ = vibration_runs()
    world.cloud.announce("vibration", "canary", world.releases.release(1, v1))
    config = world.config_file("pump-9", source="rate = 50.0\n")
    command = [sys.executable, "-m", "edge.cli", "run", "--config", str(config)]

    def launch() -> subprocess.Popen[str]:
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )

    first = launch()
    try:
        wait_for(lambda: _status(world, "pump-9").get("version") == 1, what="v1 in the process")
        path = "models/vibration/2/model.tflite"
        raw = world.releases.release(2, v2)
        world.server.faults[path] = Fault(stall_after=500)
        world.cloud.announce("vibration", "canary", raw)
        wait_for(lambda: world.server.served(path) >= 1, what="download started")
        wait_for(lambda: _status(world, "pump-9").get("step") == "downloading", what="downloading")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    state = world.tmp / "state-pump-9" / "models"
    assert json.loads((state / "state.json").read_text())["current"] == 1
    del world.server.faults[path]
    second = launch()
    try:
        assert second.stdout is not None
        started = json.loads(second.stdout.readline())
        assert started["version"] == 1  # a complete model, before any network
        wait_for(lambda: _status(world, "pump-9").get("version") == 2, what="v2 after restart")
        # The restart resumed the partial download instead of starting over.
        ranges = [r for p, r in world.server.requests if p == path]
        assert ranges[-1] == "bytes=500-"
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(second.pid, signal.SIGKILL)
    assert json.loads((state / "state.json").read_text())["current"] == 2
