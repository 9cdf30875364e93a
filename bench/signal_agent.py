"""A whole agent scoring raw samples: what the signal benchmarks measure their AUC through.

The agent is the real `edge.agent.Agent` with a stdin source of named channels,
its MQTT link on a loopback broker, and a fleet repository signed as the cloud
signs it, served by the CDN stand-in. The model is published as version 1
before the agent starts; the agent's first refresh verifies, downloads, checks
and installs it, and then takes its windowing from the installed manifest.
The samples go in as the JSON lines a sensor writes to the agent's stdin; the
agent cuts them into windows, scores each and raises its alarms. The score of
each window is read from the agent's drift window, where its scoring loop puts
the value the alarm was judged on.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.common import BenchRepository, wait_until
from edge.agent import Agent
from edge.channel_sources import stdin_readings
from edge.config import parse_agent_config
from edge.sources import SkippedLines
from edge.windowing import Reading, WindowCounts
from edgeloop.factory.config import ModelConfig, parse_config
from edgeloop.factory.run import RunResult
from edgeloop.local.broker import EmbeddedBroker, Mosquitto
from tests.support_http import cdn_of_files

INSTALL_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class AgentScores:
    """Per window the agent cut, in stream order: its score and whether it alarmed."""

    scores: npt.NDArray[np.float64]
    alarms: npt.NDArray[np.bool_]
    windows: WindowCounts
    skipped_lines: int
    # From the agent's start to the model running: refresh, download, check, swap.
    install_s: float


def json_lines(readings: Iterable[Reading]) -> str:
    """The lines a sensor writes to the agent's stdin, one sample each."""
    lines = []
    for r in readings:
        lines.append(json.dumps({"t": r.t, **r.values} if r.t is not None else dict(r.values)))
    return "\n".join(lines) + "\n"


def score_with_agent(config: ModelConfig, run: RunResult, lines: str) -> AgentScores:
    """Install `run` (a signal model of `config`) in a whole agent, feed it `lines` and
    return what it made of every window."""
    if config.signal is None or run.tflite is None:
        raise ValueError("score_with_agent needs an exported signal model")
    with ExitStack() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="edgeloop-bench-signal-agent-"))
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        has_mosquitto = shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()
        broker = Mosquitto() if has_mosquitto else EmbeddedBroker()
        cleanup.callback(broker.close)
        repository = BenchRepository.local(workdir / "cloud", config)
        repository.publish(1, run)
        cdn = cdn_of_files(repository.files)
        cleanup.callback(cdn.stop)
        (workdir / "root.json").write_bytes(repository.root)
        skipped = SkippedLines()
        agent = _agent(config, broker.url, cdn.base_url, workdir, lines, skipped)
        cleanup.callback(agent.stop)
        return _scores(agent, skipped)


def _agent(
    config: ModelConfig, broker: str, cdn: str, workdir: Path, lines: str, skipped: SkippedLines
) -> Agent:
    """An agent of `config`'s model whose stdin source reads `lines`, counting in
    `skipped` those it cannot read."""
    assert config.signal is not None
    signal = config.signal
    agent_config = parse_agent_config(
        {
            "device": {
                "thing": "bench-signal-1",
                "model": config.model.name,
                "n_features": signal.width,
            },
            "broker": {"url": broker, "reconnect_min": 0.05},
            "artifacts": {"base_url": cdn},
            "trust": {"root": "root.json", "min_refresh_seconds": 0.0},
            "state": {"dir": "agent"},
            "source": {
                "kind": "stdin",
                "channels": list(signal.channels),
                "sample_rate": signal.sample_rate,
                "window": signal.window,
                "hop": signal.hop,
            },
            "status_interval": 3600.0,
        },
        workdir,
    )
    readings = stdin_readings(signal.channels, skipped, io.StringIO(lines))
    return Agent(agent_config, readings=readings)


def _scores(agent: Agent, skipped: SkippedLines) -> AgentScores:
    started = time.monotonic()
    # Scored here, not by the agent's scoring thread: no sample may reach the windower
    # before the model is installed (it would be uploaded raw instead).
    agent.start(score=False)
    wait_until(lambda: agent.version == 1, INSTALL_TIMEOUT_S, "the signal model installed")
    install_s = time.monotonic() - started
    scores, alarms = [], []
    for sample in agent.source:
        alarms.append(agent.process(sample))
        newest = agent.drift.newest
        if newest is None:
            raise RuntimeError("the agent scored a window without its model")
        scores.append(newest)
    if agent.counters.scoring_errors or agent.version != 1:
        raise RuntimeError(
            f"the agent did not score every window with v1: {agent.counters.scoring_errors} "
            f"scoring errors, running v{agent.version}"
        )
    return AgentScores(np.array(scores), np.array(alarms), agent.windows, skipped.count, install_s)


def paired_configs(
    model: dict[str, Any], signal: dict[str, Any], train: dict[str, Any], gate: dict[str, Any]
) -> tuple[ModelConfig, ModelConfig]:
    """The signal model's config (raw windows in, the features in its graph) and the
    same estimator's on NumPy features: the pair every AUC here is compared across."""
    with_signal = parse_config({"model": model, "signal": signal, "train": train, "gate": gate})
    on_features = parse_config({"model": model, "train": train, "gate": gate})
    return with_signal, on_features
