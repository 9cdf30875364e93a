"""The whole agent: a real broker, a real CDN stand-in, real presigned uploads to moto's S3."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from edge.config import load_agent_config
from edge.errors import AgentConfigError
from edge.sources import Sample, synthetic_vibration
from tests.support_broker import EmbeddedAmqtt
from tests.support_http import artifact_server
from tests.support_release import vibration_runs
from tests.support_world import World, _status, wait_for


def test_a_retained_nudge_reaches_a_new_agent_which_updates(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.status")
    v1, v2, _ = vibration_runs()
    world.publish(1, v1)
    agent = world.agent("pump-1", source=iter(()))
    agent.start()
    wait_for(lambda: agent.version == 1, what="v1 installed")
    world.publish(2, v2, bases=[1])
    wait_for(lambda: agent.version == 2, what="v2 installed")
    wait_for(
        lambda: (
            _status(world, "pump-1").get("target_version") == 2
            and _status(world, "pump-1").get("step") == "succeeded"
        ),
        what="report",
    )
    status = _status(world, "pump-1")
    assert (status["version"], status["health"]) == (2, "healthy")
    assert "ring" not in status  # the stage is the cloud's to say, not the device's
    assert "stage" not in status
    steps = [
        doc["step"]
        for t, doc in world.cloud.statuses
        if t == "pump-1" and doc["target_version"] == 2
    ]
    # One message to the cloud per update: its outcome. The steps on the way are
    # in the agent's log only.
    assert steps == ["succeeded"]
    logged = [r.getMessage().split()[0] for r in caplog.records if "version=2" in r.getMessage()]
    assert logged[:7] == [
        "event=update_verified",
        "event=update_downloading",
        "event=update_patching",
        "event=update_checking",
        "event=update_swapped",
        "event=update_persisted",
        "event=update_installed",
    ]
    # The v1 nudge's refresh may already have found v2 (published meanwhile): the v2
    # nudge then finds it running, which is logged and changes nothing.
    assert set(logged[7:]) <= {"event=update_already_installed"}
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
            w.publish(1, v1)
            wait_for(lambda: agent.version == 1, what="v1 over amqtt")
        finally:
            w.close()
            broker.close()


def test_a_scoring_loop_at_1000_samples_per_second_loses_nothing_during_a_swap(
    world: World,
) -> None:
    v1, v2, _ = vibration_runs()
    world.publish(1, v1)
    agent = world.agent("pump-1", source=iter(()))
    agent.start(score=False)
    wait_for(lambda: agent.version == 1, what="v1 installed")
    samples = list(synthetic_vibration(8, 0.01, seed=3, count=6000))
    versions: list[int] = []
    pace = 1.0 / 1500  # 1,500 samples/s asked for
    world.publish(2, v2, bases=[1])
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
    world.publish(1, v1)
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


def test_broker_down_then_back_reconnects_updates_and_loses_no_upload(world: World) -> None:
    v1, v2, _ = vibration_runs()
    world.publish(1, v1)
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
    world.publish(2, v2, bases=[1])
    wait_for(lambda: agent.link.connected, what="reconnect")
    wait_for(lambda: agent.version == 2, what="v2 after reconnect")
    wait_for(lambda: len(agent.queue) == 0, timeout=30, what="queue drained")
    assert len(world.cloud.uploaded_keys()) == queued
    assert agent.queue.dropped == 0
    assert agent.link.connections >= 2


def test_a_restarted_agent_scores_at_once_with_its_persisted_model(world: World) -> None:
    v1, _, _ = vibration_runs()
    world.publish(1, v1)
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
