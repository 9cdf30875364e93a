"""The signal benchmarks' driver: a whole agent installs the model, reads every line and
the scores handed back are the agent's own, window by window."""

from __future__ import annotations

import numpy as np

from bench.recordings import BASIC_MOTIONS_CHANNELS, Case, Recording
from bench.signal_agent import json_lines, score_with_agent
from bench.signal_real import case_windows, configs, readings
from edgeloop.factory.data import Dataset
from edgeloop.factory.run import train_run
from edgeloop.runtime import CompiledModel


def _recording(cases: int, seed: int) -> Recording:
    """Cases of 100 samples at 10 Hz: a quiet wrist, every third case a busy one."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(cases):
        busy = i % 3 == 2
        scale = 8.0 if busy else rng.choice([0.3, 1.5])
        samples = rng.normal(0.0, scale, (100, len(BASIC_MOTIONS_CHANNELS)))
        out.append(Case("Running" if busy else "Walking", samples))
    return Recording("Made", ("Walking", "Running"), tuple(out))


def test_the_agent_scores_every_window_as_its_model_does_and_alarms_on_the_busy_ones() -> None:
    signal_config, _ = configs()
    assert signal_config.signal is not None
    pipeline = signal_config.signal
    train, _ = case_windows(pipeline, _recording(30, seed=1), ("Walking",))
    run = train_run(signal_config, Dataset(X=train, y=None, batches=()))
    assert run.tflite is not None, run.decision.reason
    test = _recording(6, seed=2)
    windows, busy = case_windows(pipeline, test)
    lines = json_lines(readings(test))
    got = score_with_agent(signal_config, run, lines + "not a sample\n")

    assert got.skipped_lines == 1
    assert got.windows.gaps == len(test.cases) - 1
    direct = CompiledModel(run.tflite).predict(windows.astype(np.float32)).reshape(-1)
    np.testing.assert_allclose(got.scores, direct, rtol=1e-6)
    assert got.alarms[busy].all()
    assert not got.alarms[~busy].any()
