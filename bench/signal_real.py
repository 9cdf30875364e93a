"""Signals in from a real recording: anomaly AUC through a whole agent, on BasicMotions.

BasicMotions (UEA archive, as the aeon wheel ships it: bench/recordings.py) is a
smartwatch's accelerometer and gyroscope, 6 channels at 10 Hz, in cases of
10 s of one activity. Normal is standing and walking: the signal model is
trained on the TRAIN split's cases of those two only. Anomalies are running
and badminton. The TEST split's 40 cases go into a whole agent
(bench/signal_agent.py) as JSON lines at 10 Hz, a second of silence between
cases, so each case starts a new window (the windower counts each such gap).
A window is anomalous when its case is running or badminton.

The windowing and features, chosen from what the activities are, before any
test window was scored: windows of 2 s (20 samples, a few strides of walking),
a hop of half that; per channel the std (how hard the wrist moves about its
mean, whatever way the watch is worn) and the peak-to-peak range (the same for
the bursts of a swing). No band energies: at 10 Hz a 2 s window has bins 0.5 Hz
apart, and running differs from walking in how much, more than at what rhythm.

The baseline is the same k-means fitted on the same features computed with
NumPy beforehand (what a device would otherwise hand-code), scored on the same
windows cut by `signal.frames`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

from bench.recordings import (
    BASIC_MOTIONS_CHANNELS,
    BASIC_MOTIONS_RATE,
    Recording,
    basic_motions,
    read_pin,
)
from bench.signal_agent import json_lines, paired_configs, score_with_agent
from edge.windowing import Reading
from edgeloop.factory.config import ModelConfig
from edgeloop.factory.data import Dataset
from edgeloop.factory.run import train_run
from edgeloop.factory.signal import SignalSection, extract, frames
from edgeloop.runtime import CompiledModel

NORMAL = ("Standing", "Walking")
ANOMALOUS = ("Running", "Badminton")
WINDOW = 20
HOP = 10
# Between cases: far past the windower's 1.5 sample periods, so each case is its own.
CASE_GAP_S = 1.0
GOAL_AUC = 0.95
SIGNAL: dict[str, Any] = {
    "channels": list(BASIC_MOTIONS_CHANNELS),
    "sample_rate": BASIC_MOTIONS_RATE,
    "window": WINDOW,
    "hop": HOP,
    "features": [{"name": "std"}, {"name": "peak_to_peak"}],
}
N_FEATURES = 2 * len(BASIC_MOTIONS_CHANNELS)
# Two clusters, one per normal activity; the threshold from the training scores' MAD.
TRAIN = {"seed": 0, "params": {"n_clusters": 2, "threshold_method": "mad", "mad_k": 5.0}}
# 20 training cases make 180 windows, 144 after the 20% holdout.
GATE = {"metric": "silhouette", "threshold": 0.2, "min_rows": 100}


def configs() -> tuple[ModelConfig, ModelConfig]:
    """The signal model's config (raw windows in) and the feature model's."""
    model = {"name": "wrist", "kind": "kmeans_anomaly", "n_features": N_FEATURES}
    return paired_configs(model, SIGNAL, TRAIN, GATE)


def case_windows(
    pipeline: SignalSection, recording: Recording, labels: tuple[str, ...] | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Every window of every case (of `labels`, if given), in case order, and per window
    whether its case is anomalous."""
    windows, anomalous = [], []
    for case in recording.cases:
        if labels is not None and case.label not in labels:
            continue
        cut = frames(pipeline, case.samples)
        windows.append(cut)
        anomalous += [case.label in ANOMALOUS] * len(cut)
    return np.concatenate(windows), np.array(anomalous)


def readings(recording: Recording) -> list[Reading]:
    """The cases one after another at 10 Hz, CASE_GAP_S of silence between them."""
    out: list[Reading] = []
    period = 1.0 / BASIC_MOTIONS_RATE
    t = 0.0
    for case in recording.cases:
        for row in case.samples.tolist():
            out.append(Reading(round(t, 6), dict(zip(BASIC_MOTIONS_CHANNELS, row, strict=True))))
            t += period
        t += CASE_GAP_S
    return out


def measure() -> dict[str, Any]:
    train, test = basic_motions()
    signal_config, feature_config = configs()
    assert signal_config.signal is not None
    pipeline = signal_config.signal
    normal, _ = case_windows(pipeline, train, NORMAL)
    signal_run = train_run(signal_config, Dataset(X=normal, y=None, batches=()))
    feature_run = train_run(
        feature_config, Dataset(X=extract(pipeline, normal), y=None, batches=())
    )
    for name, run in (("signal", signal_run), ("feature", feature_run)):
        if run.tflite is None:
            raise RuntimeError(f"the {name} model was not exported: {run.decision.reason}")
    assert signal_run.tflite is not None
    assert feature_run.tflite is not None

    windows, anomalous = case_windows(pipeline, test)
    agent = score_with_agent(signal_config, signal_run, json_lines(readings(test)))
    if len(agent.scores) != len(windows):
        raise RuntimeError(f"the agent cut {len(agent.scores)} windows, frames {len(windows)}")
    if agent.windows.gaps != len(test.cases) - 1 or agent.skipped_lines:
        raise RuntimeError(
            f"the agent saw {agent.windows.gaps} gaps for {len(test.cases)} cases and "
            f"skipped {agent.skipped_lines} lines"
        )
    baseline = CompiledModel(feature_run.tflite).predict(extract(pipeline, windows)).reshape(-1)
    # The agent's graph on its own rows against the same graph on `frames`' rows: the
    # agent cut the windows the labels assume.
    direct = CompiledModel(signal_run.tflite).predict(windows.astype(np.float32)).reshape(-1)
    auc = float(roc_auc_score(anomalous, agent.scores))
    pin = read_pin("aeon")
    return {
        "recording": {
            "name": "BasicMotions (UEA archive)",
            "source": f"aeon {pin.version} wheel (sha256 {pin.sha256})",
            "channels": list(BASIC_MOTIONS_CHANNELS),
            "rate_hz": BASIC_MOTIONS_RATE,
            "train_cases_normal": sum(c.label in NORMAL for c in train.cases),
            "test_cases": len(test.cases),
        },
        "normal": list(NORMAL),
        "anomalous": list(ANOMALOUS),
        "window": {"samples": WINDOW, "hop": HOP, "seconds": WINDOW / BASIC_MOTIONS_RATE},
        "features": N_FEATURES,
        "train_windows": len(normal),
        "test_windows": len(windows),
        "anomalous_windows": int(anomalous.sum()),
        "agent_gaps": agent.windows.gaps,
        "agent_install_s": round(agent.install_s, 2),
        "agent_vs_direct_max_abs": float(np.abs(agent.scores - direct).max()),
        "auc_signal_model_through_agent": round(auc, 4),
        "auc_feature_model_numpy_features": round(float(roc_auc_score(anomalous, baseline)), 4),
        "alarm_rate_normal": round(float(agent.alarms[~anomalous].mean()), 4),
        "alarm_rate_anomalous": round(float(agent.alarms[anomalous].mean()), 4),
        "goal_auc": GOAL_AUC,
        "meets_goal": auc >= GOAL_AUC,
    }
