"""The real-recording signal benchmark: how its cases reach the agent, and its README row."""

from __future__ import annotations

import json

import numpy as np

from bench import readme, signal_real
from bench.common import RESULTS
from bench.recordings import BASIC_MOTIONS_CHANNELS, Case, Recording
from edge.windowing import WindowCounts, Windower
from edgeloop.contract import WindowSpec


def _recording(lengths: list[int]) -> Recording:
    rng = np.random.default_rng(0)
    labels = ["Walking", "Running", "Standing"]
    cases = tuple(
        Case(labels[i % 3], rng.normal(size=(n, len(BASIC_MOTIONS_CHANNELS))))
        for i, n in enumerate(lengths)
    )
    return Recording("Tiny", tuple(labels), cases)


def test_each_case_is_windowed_on_its_own_as_the_labels_assume() -> None:
    """The agent's windower restarts at the gap between two cases, so it cuts exactly the
    windows `case_windows` labels, in the same order: none spans two cases."""
    recording = _recording([30, 45, 20])
    signal_config, _ = signal_real.configs()
    assert signal_config.signal is not None
    pipeline = signal_config.signal
    windows, anomalous = signal_real.case_windows(pipeline, recording)
    counts = WindowCounts()
    spec = WindowSpec(pipeline.channels, pipeline.sample_rate, pipeline.window, pipeline.hop)
    windower = Windower(lambda: spec, counts)
    rows = [r for r in map(windower.push, signal_real.readings(recording)) if r is not None]
    assert counts.gaps == len(recording.cases) - 1
    # 2 + 3 + 1 windows of 20 samples at a hop of 10.
    assert len(rows) == len(windows) == 6
    np.testing.assert_allclose(np.stack(rows), windows, rtol=1e-6)
    assert anomalous.tolist() == [False] * 2 + [True] * 3 + [False]


def test_only_the_normal_activities_are_trained_on() -> None:
    signal_config, _ = signal_real.configs()
    assert signal_config.signal is not None
    _, anomalous = signal_real.case_windows(
        signal_config.signal, _recording([30, 30, 30]), signal_real.NORMAL
    )
    assert len(anomalous) == 4
    assert not anomalous.any()


def test_the_readme_row_reads_the_results_file() -> None:
    result = json.loads((RESULTS / "signal_real.json").read_text())
    (row,) = readme._signal_real_rows(result)
    assert "BasicMotions" in row[0]
    assert row[1] == "≥ 0.95"
    assert row[2].startswith(str(result["auc_signal_model_through_agent"]))
    assert row[3] == ("yes" if result["meets_goal"] else "**no**")
    assert row[4] == "`python -m bench.run signal_real`"
