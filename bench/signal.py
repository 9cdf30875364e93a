"""Signals in on the device: what one window costs, and whether features computed by the
graph find knocks as well as hand-made ones.

The agent's synthetic raw source (`source.kind = "synthetic"` with channels): a
3-axis accelerometer (z carries gravity) in four operating modes, a shaft tone
each, knocking now and then (broadband bursts of two windows). The same k-means
estimator is trained twice on the same windows:

- the signal model: a `[signal]` config, raw windows in, the features in its graph;
- the feature model: the same features computed with NumPy beforehand (what a
  device would otherwise hand-code), feature vectors in.

Per-window cost, one window at a time as a device scores a stream: the agent's
windower alone (`edge.windowing.Windower`), the signal model's whole inference, its
feature part alone (the features graph the export check runs, `features_tflite`),
the estimator part alone (the feature model, whose graph is the scaler and the
k-means), and NumPy's features of one window.

Anomaly AUC on a live stream the models never saw: the signal model installed in a
whole agent (bench/signal_agent.py: published, verified, downloaded and swapped in,
the stream fed to its stdin source as JSON lines), against the feature model on
NumPy features of the same windows. A window is a knock when any of its samples
is. These knocks are loud (noise of 4 against tones of 0.5 to 3): both AUCs
saturate, so the figure says the graph's features lose nothing against NumPy's,
not how hard knocks are to find.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

from bench.common import percentiles, time_calls
from bench.signal_agent import json_lines, paired_configs, score_with_agent
from edge.channel_sources import parse_reading, synthetic_signal
from edge.windowing import Reading, Windower
from edgeloop.contract import WindowSpec
from edgeloop.factory.config import ModelConfig
from edgeloop.factory.data import Dataset
from edgeloop.factory.deltas import plan_deltas
from edgeloop.factory.run import RunResult, train_run
from edgeloop.factory.signal import SignalSection, extract, frames
from edgeloop.factory.signal_graph import features_tflite
from edgeloop.runtime import CompiledModel

RATE = 1000.0
WINDOW = 256
HOP = 128
CHANNELS = ("x", "y", "z")
# Shaft tone (Hz), its amplitude, the noise level.
MODES = ((25.0, 1.0, 0.1), (60.0, 2.0, 0.2), (120.0, 0.5, 0.05), (300.0, 3.0, 0.4))
SEGMENT = 4 * WINDOW
TRAIN_SEGMENTS = 300
LIVE_SEGMENTS = 120
CALLS = 2000
LINE = '{"t": 1712.512, "x": 0.1234567, "y": -0.2345678, "z": 9.8123456}'

SIGNAL: dict[str, Any] = {
    "channels": list(CHANNELS),
    "sample_rate": RATE,
    "window": WINDOW,
    "hop": HOP,
    # As docs/examples/pump-signal.toml: z's gravity kept out of rms and DC bands.
    "features": [
        {"name": "rms", "channels": ["x", "y"]},
        {"name": "std"},
        {"name": "peak_to_peak"},
        {"name": "crest_factor", "channels": ["x", "y"]},
        {"name": "zero_crossing_rate", "channels": ["z"], "level": 9.81},
        {"name": "band_energy", "bands": [[1, 40], [40, 150], [150, 500]]},
    ],
}
N_FEATURES = 20
TRAIN = {"seed": 0, "params": {"n_clusters": 4, "threshold_method": "mad", "mad_k": 5.0}}
GATE = {"metric": "silhouette", "threshold": 0.2, "min_rows": 200}


def _configs() -> tuple[ModelConfig, ModelConfig]:
    model = {"name": "pump", "kind": "kmeans_anomaly", "n_features": N_FEATURES}
    return paired_configs(model, SIGNAL, TRAIN, GATE)


def machine(
    segments: int, seed: int, knock_rate: float
) -> tuple[list[Reading], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """The agent's synthetic raw source (`edge.channel_sources.synthetic_signal`):
    its readings, the same as a [samples, 3] array, and per sample whether it knocks."""
    readings = list(
        synthetic_signal(
            CHANNELS, RATE, knock_rate, seed, segment=SEGMENT, count=segments * SEGMENT
        )
    )
    stream = np.array([[r.values[c] for c in CHANNELS] for r in readings])
    knocked = np.array([r.planted_anomaly for r in readings])
    return readings, stream, knocked


def _train() -> tuple[ModelConfig, RunResult, RunResult, SignalSection]:
    signal_config, feature_config = _configs()
    assert signal_config.signal is not None
    pipeline = signal_config.signal
    _, stream, _ = machine(TRAIN_SEGMENTS, seed=1, knock_rate=0.04)
    windows = frames(pipeline, stream)
    signal_run = train_run(signal_config, Dataset(X=windows, y=None, batches=()))
    feature_run = train_run(
        feature_config, Dataset(X=extract(pipeline, windows), y=None, batches=())
    )
    for name, run in (("signal", signal_run), ("feature", feature_run)):
        if run.tflite is None:
            raise RuntimeError(f"the {name} model was not exported: {run.decision.reason}")
    return signal_config, signal_run, feature_run, pipeline


def _update_bytes(
    pipeline: SignalSection, first: RunResult, feature_first: RunResult
) -> dict[str, Any]:
    """What a weights-only retrain ships, with the pipeline in the graph and without: the
    same configs retrained on a second stretch of the machine, each new model planned
    against its predecessor as a release is (the smallest patch, or the compressed full
    artifact if no patch is smaller)."""
    signal_config, feature_config = _configs()
    _, stream, _ = machine(TRAIN_SEGMENTS, seed=3, knock_rate=0.04)
    windows = frames(pipeline, stream)
    second = train_run(signal_config, Dataset(X=windows, y=None, batches=()))
    feature_second = train_run(
        feature_config, Dataset(X=extract(pipeline, windows), y=None, batches=())
    )
    shipped: dict[str, int] = {}
    for name, old, new in (
        ("signal", first, second),
        ("feature", feature_first, feature_second),
    ):
        assert old.tflite is not None
        if new.tflite is None:
            raise RuntimeError(f"the retrained {name} model was not exported")
        plan = plan_deltas(new.tflite, {1: old.tflite})
        sizes = [p.size for p in plan.patches] or [len(plan.compressed_full)]
        shipped[name] = min(sizes)
    return {
        "weights_only_update_bytes_signal": shipped["signal"],
        "weights_only_update_bytes_feature": shipped["feature"],
        "weights_only_update_ratio": round(shipped["signal"] / shipped["feature"], 3),
    }


def _windowing_cost(spec: WindowSpec, readings: list[Reading]) -> float:
    """The agent's windower alone on the readings: seconds per window it cuts."""
    windower = Windower(lambda: spec)
    rows = 0
    start = time.perf_counter()
    for reading in readings:
        if windower.push(reading) is not None:
            rows += 1
    return (time.perf_counter() - start) / max(rows, 1)


def measure() -> dict[str, Any]:
    signal_config, signal_run, feature_run, pipeline = _train()
    assert signal_run.tflite is not None
    assert feature_run.tflite is not None
    readings, live, knocked = machine(LIVE_SEGMENTS, seed=2, knock_rate=0.2)
    windows = frames(pipeline, live)
    feature_model = CompiledModel(feature_run.tflite)
    full = CompiledModel(signal_run.tflite)
    features_only = CompiledModel(features_tflite(pipeline))
    one = windows[:1].astype(np.float32)
    one_features = extract(pipeline, one).astype(np.float32)
    timings = {
        "signal_model_us": percentiles(time_calls(lambda: full.predict(one), CALLS)),
        "feature_part_us": percentiles(time_calls(lambda: features_only.predict(one), CALLS)),
        "estimator_part_us": percentiles(
            time_calls(lambda: feature_model.predict(one_features), CALLS)
        ),
        "numpy_features_us": percentiles(time_calls(lambda: extract(pipeline, one), CALLS // 4)),
    }
    windowing_s = _windowing_cost(WindowSpec(CHANNELS, RATE, WINDOW, HOP), readings)
    # After the timings: the agent's threads and broker are gone by then, but not
    # necessarily everything they left for the garbage collector.
    agent = score_with_agent(signal_config, signal_run, json_lines(readings))
    if agent.windows.gaps or agent.windows.clock_jumps or agent.skipped_lines:
        raise RuntimeError(f"the stream restarted windows: {agent.windows.summary()}")
    starts = range(0, len(live) - WINDOW + 1, HOP)
    labels = np.array([knocked[s : s + WINDOW].any() for s in starts])
    if len(agent.scores) != len(windows):
        raise RuntimeError(f"the agent cut {len(agent.scores)} windows, frames {len(windows)}")
    feature_scores = feature_model.predict(extract(pipeline, windows)).reshape(-1)
    return {
        **_update_bytes(pipeline, signal_run, feature_run),
        "window": {"samples": WINDOW, "hop": HOP, "channels": len(CHANNELS), "rate_hz": RATE},
        "features": N_FEATURES,
        "signal_model_bytes": len(signal_run.tflite),
        "feature_model_bytes": len(feature_run.tflite),
        "per_window": timings,
        "windowing_us_per_window": round(windowing_s * 1e6, 2),
        # What a stdin, MQTT or serial source adds per sample: reading its JSON line.
        "parse_us_per_sample": percentiles(
            time_calls(lambda: parse_reading(LINE, CHANNELS), CALLS)
        )["p50_us"],
        "live_windows": len(labels),
        "knock_windows": int(labels.sum()),
        "auc_signal_model_through_agent": round(float(roc_auc_score(labels, agent.scores)), 4),
        "auc_feature_model_numpy_features": round(float(roc_auc_score(labels, feature_scores)), 4),
    }
