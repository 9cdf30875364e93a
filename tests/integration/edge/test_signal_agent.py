"""Signals in, end to end: an agent fed raw accelerometer samples as JSON lines uploads
raw windows while it has no model, installs a signal model the factory trained on
raw windows, cuts the stream into that model's windows and raises alarms on knocks."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from functools import cache
from typing import Any
from urllib.parse import urlparse

import numpy as np
import numpy.typing as npt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.agent import Agent
from edge.channel_sources import stdin_readings
from edge.config import load_agent_config
from edge.sources import Sample, SkippedLines
from edgeloop.factory.config import ModelConfig, parse_config
from edgeloop.factory.run import RunResult, train_run
from edgeloop.factory.signal import frames
from tests.factories import SIGNAL_RATE, SIGNAL_WINDOW, as_dataset, signal_doc, signal_windows
from tests.support_world import World, _status, wait_for

MODES = ((25.0, 1.0, 0.1), (60.0, 2.0, 0.2), (120.0, 0.5, 0.05), (300.0, 3.0, 0.4))
HOP = SIGNAL_WINDOW // 2
WIDTH = SIGNAL_WINDOW * 3


@cache
def pump_run() -> RunResult:
    """A k-means model on raw windows, named as the world's devices install."""
    X, _ = signal_windows(1200, seed=1, outlier_share=0.03)
    run = train_run(parse_config(_named(signal_doc())), as_dataset(X))
    assert run.promoted, run.decision.reason
    return run


def recording(segments: int, seed: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """A continuous [samples, 3] accelerometer stream: each segment four windows of one
    operating mode, every fifth segment's middle two windows knocking. Returns the
    stream and, per sample, whether it is part of a knock."""
    rng = np.random.default_rng(seed)
    n = 4 * SIGNAL_WINDOW
    t = np.arange(n) / SIGNAL_RATE
    parts, knocks = [], []
    for s in range(segments):
        freq, amp, noise = MODES[int(rng.integers(0, len(MODES)))]
        freq *= rng.uniform(0.97, 1.03)
        phase = rng.uniform(0, 2 * np.pi, 3)
        gains = np.array([1.0, 0.6, 0.3]) * amp
        part = np.sin(2 * np.pi * freq * t[:, None] + phase[None, :]) * gains[None, :]
        part += rng.normal(0.0, noise, (n, 3))
        knock = np.zeros(n, dtype=bool)
        if s % 5 == 4:
            knock[SIGNAL_WINDOW : 3 * SIGNAL_WINDOW] = True
            part[knock] += rng.normal(0.0, 4.0, (int(knock.sum()), 3))
        part[:, 2] += 9.81
        parts.append(part)
        knocks.append(knock)
    return np.concatenate(parts), np.concatenate(knocks)


def json_lines(samples: npt.NDArray[np.float64], t0: float) -> list[str]:
    return [
        json.dumps({"t": t0 + i / SIGNAL_RATE, "x": x, "y": y, "z": z})
        for i, (x, y, z) in enumerate(samples.tolist())
    ]


def signal_agent(world: World, lines: list[str]) -> tuple[Agent, SkippedLines]:
    world.cloud.enroll("pump-1", "vibration")
    path = world.config_file(
        "pump-1",
        source=(
            'kind = "stdin"\nchannels = ["x", "y", "z"]\n'
            f"sample_rate = {SIGNAL_RATE}\nwindow = {SIGNAL_WINDOW}\nhop = {SIGNAL_WINDOW}\n"
        ),
        upload="batch_rows = 10\n",
    )
    path.write_text(path.read_text().replace("n_features = 8", f"n_features = {WIDTH}"))
    skipped = SkippedLines()
    readings = stdin_readings(("x", "y", "z"), skipped, io.StringIO("\n".join(lines)))
    agent = Agent(load_agent_config(path), readings=readings)
    world.agents.append(agent)
    return agent, skipped


def take(source: Iterator[Any], n: int) -> list[Any]:
    return [next(source) for _ in range(n)]


def test_raw_samples_in_alarms_out(world: World) -> None:
    before, _ = recording(5, seed=20)
    live, knocked = recording(40, seed=21)
    lines = json_lines(before, 0.0)
    # Samples lost after the first phase, then the clock set back: each starts over.
    lines += json_lines(live[:1000], 100.0)
    lines += json_lines(live[1000:], 50.0)
    agent, skipped = signal_agent(world, lines)
    agent.start(score=False)
    source = iter(agent.source)

    # No model yet: every window goes up raw, at the config's window and hop.
    first = take(source, 10)
    for sample in first:
        agent.process(sample)
    assert agent.counters.uploaded_rows_without_model == 10
    assert all(s.x.shape == (WIDTH,) for s in first)
    wait_for(lambda: len(world.cloud.uploaded_keys()) >= 1, what="raw windows in S3")
    assert agent.version is None

    run = pump_run()
    manifest = world.publish(1, run, config=parse_config(_named(signal_doc())))
    assert manifest.window is not None
    assert (manifest.window.hop, manifest.window.channels) == (HOP, ("x", "y", "z"))
    wait_for(lambda: agent.version == 1, timeout=40, what="the signal model installed")

    # The rest of the first phase, then the live stream, cut at the model's hop.
    scored = np.array([agent.process(sample) for sample in source])
    assert skipped.count == 0
    counts = agent.windows
    # The jump from the first phase's clock to the live one's is a gap; the live
    # stream's own clock going back is a jump.
    assert (counts.gaps, counts.clock_jumps) == (1, 1)
    assert agent.counters.alarms == int(scored.sum())

    # Where the windower cut the live stream: from its start every hop, and again
    # from the sample where the clock went back.
    starts: list[int] = []
    for begin, end in ((0, 1000), (1000, len(live))):
        starts += range(begin, end - SIGNAL_WINDOW + 1, HOP)
    assert len(scored) > len(starts)
    alarms = scored[-len(starts) :]
    inside = np.array([knocked[s : s + SIGNAL_WINDOW].all() for s in starts])
    # A window across a change of operating mode is unlike any training window (a
    # tone stopping mid-window): only windows within one mode count as normal.
    segment = 4 * SIGNAL_WINDOW
    outside = np.array(
        [
            not knocked[s : s + SIGNAL_WINDOW].any()
            and s // segment == (s + SIGNAL_WINDOW - 1) // segment
            for s in starts
        ]
    )
    assert inside.sum() >= 10
    assert alarms[inside].mean() >= 0.9
    assert alarms[outside].mean() <= 0.05
    wait_for(lambda: len(world.cloud.events) > 0, what="alarm events")

    agent.publish_status()
    wait_for(
        lambda: "1 clock jumps" in str(_status(world, "pump-1").get("detail")),
        what="the window restarts in the status",
    )


def _named(doc: dict[str, Any]) -> dict[str, Any]:
    doc["model"]["name"] = "vibration"
    return doc


def test_a_device_fed_feature_vectors_refuses_a_signal_model_and_says_why(world: World) -> None:
    agent = world.agent("pump-1", source=iter(()))
    agent.start(score=False)
    world.publish(1, pump_run(), config=parse_config(_named(signal_doc())))
    wait_for(
        lambda: "delivers feature vectors" in str(_status(world, "pump-1").get("detail")),
        timeout=40,
        what="the refusal in the status",
    )
    assert agent.version is None


def test_raw_samples_from_a_local_mqtt_topic(world: World) -> None:
    world.cloud.enroll("pump-1", "vibration")
    path = world.config_file(
        "pump-1",
        source=(
            f'kind = "mqtt"\nurl = "{world.broker.url}"\ntopic = "sensors/pump-1"\n'
            f'channels = ["x", "y", "z"]\nsample_rate = {SIGNAL_RATE}\n'
            f"window = {SIGNAL_WINDOW}\nhop = {SIGNAL_WINDOW}\nrate = 0\n"
        ),
        upload="batch_rows = 4\n",
    )
    path.write_text(path.read_text().replace("n_features = 8", f"n_features = {WIDTH}"))
    agent = Agent(load_agent_config(path))
    world.agents.append(agent)
    agent.start()
    samples, _ = recording(2, seed=5)  # 1,024 samples: 8 windows at a hop of 128
    lines = json_lines(samples, 0.0)
    url = urlparse(world.broker.url)
    sensor = mqtt.Client(CallbackAPIVersion.VERSION2)
    sensor.connect(url.hostname or "", url.port or 1883)
    sensor.loop_start()
    try:
        # One message may carry many samples; retained, so it reaches the source
        # whenever its subscription lands.
        sensor.publish("sensors/pump-1", "\n".join(lines), qos=1, retain=True).wait_for_publish(5)
        wait_for(lambda: agent.counters.uploaded_rows_without_model == 8, what="raw windows")
    finally:
        sensor.publish("sensors/pump-1", b"", qos=1, retain=True).wait_for_publish(5)
        sensor.loop_stop()
        sensor.disconnect()
    assert agent.skipped.count == 0
    assert agent.windows.windows == 8


def half_window_run(hop: int, seed: int) -> tuple[ModelConfig, RunResult]:
    """A v2 config cutting windows half as long at `hop`, and its promoted run."""
    doc = _named(signal_doc())
    doc["signal"]["window"] = SIGNAL_WINDOW // 2
    doc["signal"]["hop"] = hop
    short = parse_config(doc)
    assert short.signal is not None
    stream, _ = recording(200, seed=seed)
    v2 = train_run(short, as_dataset(frames(short.signal, stream)[::4]))
    assert v2.promoted, v2.decision.reason
    return short, v2


def test_an_update_that_changes_the_window_takes_effect_at_the_swap(world: World) -> None:
    """v2 windows half as long, with a hop of a quarter: it arrives as a patch of v1
    with its window spec signed beside it, and the next rows are v2's."""
    short, v2 = half_window_run(SIGNAL_WINDOW // 8, seed=30)
    live, _ = recording(6, seed=31)
    agent, _ = signal_agent(world, json_lines(live, 0.0))
    agent.start(score=False)
    world.publish(1, pump_run(), config=parse_config(_named(signal_doc())))
    wait_for(lambda: agent.version == 1, timeout=40, what="v1")
    source = iter(agent.source)
    assert next(source).x.shape == (WIDTH,)
    world.publish(2, v2, config=short, bases=[1])
    wait_for(lambda: agent.version == 2, timeout=40, what="v2")
    assert world.server.served("models/vibration/2/model.tflite") == 0  # the patch came
    rows = [s.x for s in source]
    assert {r.shape for r in rows} == {(SIGNAL_WINDOW // 2 * 3,)}
    for row in rows:
        agent.process(Sample(row))
    assert agent.counters.scoring_errors == 0
    # The buffer started over at the swap: v2's rows every 16 samples after 64.
    remaining = len(live) - SIGNAL_WINDOW  # v1's one row took the first window
    assert len(rows) == (remaining - SIGNAL_WINDOW // 2) // (SIGNAL_WINDOW // 8) + 1


def test_a_rollback_across_a_change_of_window_brings_the_old_window_back(
    world: World,
) -> None:
    """v2 cuts shorter windows; the rollout is aborted and the pointer names v1 again.
    The device follows it down, and the rows it cuts are v1's width again: the window
    is signed with the version, so it rolls back with the model."""
    short, v2 = half_window_run(SIGNAL_WINDOW // 4, seed=40)
    live, _ = recording(8, seed=41)
    agent, _ = signal_agent(world, json_lines(live, 0.0))
    agent.start(score=False)
    world.publish(1, pump_run(), config=parse_config(_named(signal_doc())))
    wait_for(lambda: agent.version == 1, timeout=40, what="v1")
    source = iter(agent.source)
    world.publish(2, v2, config=short, bases=[1])
    wait_for(lambda: agent.version == 2, timeout=40, what="v2")
    assert next(source).x.shape == (SIGNAL_WINDOW // 2 * 3,)
    # The abort: the pointer names v1 again, and every band is nudged.
    world.releases.point(1)
    world.cloud.nudge("vibration", 1)
    wait_for(lambda: agent.version == 1, timeout=40, what="the rollback to v1")
    rows = list(source)
    assert rows, "the stream ended before a row after the rollback"
    assert {r.x.shape for r in rows} == {(WIDTH,)}
