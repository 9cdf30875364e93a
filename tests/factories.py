"""Configs and data shared by the model-factory tests: real digits, planted outliers."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.datasets import load_digits

from edgeloop.factory.config import ModelConfig, parse_config
from edgeloop.factory.data import Dataset


def digits_config(
    kind: str = "mlp_classifier", threshold: float = 0.93, quantize: str = "none", **params: Any
) -> ModelConfig:
    return parse_config(
        {
            "model": {"name": "digits", "kind": kind, "n_features": 64, "classes": list(range(10))},
            "train": {
                "params": params
                or ({"hidden_layer_sizes": [32]} if kind == "mlp_classifier" else {})
            },
            "gate": {"metric": "accuracy", "threshold": threshold, "min_improvement": 0.005},
            "export": {"quantize": quantize},
        }
    )


def digits_share(share: float, seed: int = 0) -> Dataset:
    """The first `share` of scikit-learn's bundled digits, in a seeded random order."""
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(X))[: int(share * len(X))]
    return Dataset(X=X[order].astype(np.float64), y=y[order].astype(np.int64), batches=())


def kmeans_config(
    threshold: float = 0.5, quantize: str = "none", n_clusters: int = 4
) -> ModelConfig:
    return parse_config(
        {
            "model": {"name": "vibration", "kind": "kmeans_anomaly", "n_features": 8},
            "train": {"params": {"n_clusters": n_clusters, "score_quantile": 0.99}},
            "gate": {"metric": "silhouette", "threshold": threshold},
            "export": {"quantize": quantize},
        }
    )


def planted_outliers(
    rows: int, seed: int, outlier_share: float = 0.03
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Four operating modes in 8 features, with a share of rows replaced by outliers."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(42).normal(0.0, 8.0, size=(4, 8))
    X = centers[rng.integers(0, 4, rows)] + rng.normal(0.0, 1.0, size=(rows, 8))
    outlier = np.zeros(rows, dtype=bool)
    outlier[rng.choice(rows, int(outlier_share * rows), replace=False)] = True
    X[outlier] = rng.uniform(-30.0, 30.0, size=(int(outlier.sum()), 8))
    return X, outlier


def as_dataset(X: npt.NDArray[np.float64]) -> Dataset:
    return Dataset(X=X, y=None, batches=())


def digits_toml(threshold: float = 0.93, min_improvement: float = 0.005) -> str:
    """The digits model config as a data scientist writes it."""
    return f"""
[model]
name = "digits"
kind = "mlp_classifier"
n_features = 64
classes = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]

[train]
params = {{ hidden_layer_sizes = [32] }}

[gate]
metric = "accuracy"
threshold = {threshold}
min_improvement = {min_improvement}
"""


SIGNAL_RATE = 1000.0
SIGNAL_WINDOW = 128


def signal_doc(kind: str = "kmeans_anomaly", quantize: str = "none") -> dict[str, Any]:
    """A model fed raw 3-axis vibration windows, with every feature of the vocabulary."""
    classifier = kind != "kmeans_anomaly"
    features: list[dict[str, Any]] = [
        {"name": "mean"},
        {"name": "std"},
        {"name": "rms"},
        {"name": "peak_to_peak"},
        {"name": "crest_factor", "channels": ["x", "y"]},
        {"name": "zero_crossing_rate", "channels": ["z"], "level": 9.81},
        {"name": "zero_crossing_rate", "channels": ["x"]},
        {"name": "band_energy", "bands": [[0, 40], [40, 150], [150, 500]]},
    ]
    return {
        "model": {
            "name": "pump",
            "kind": kind,
            "n_features": 3 * 4 + 2 + 1 + 1 + 3 * 3,
            **({"classes": [0, 1, 2, 3]} if classifier else {}),
        },
        "signal": {
            "channels": ["x", "y", "z"],
            "sample_rate": SIGNAL_RATE,
            "window": SIGNAL_WINDOW,
            "hop": SIGNAL_WINDOW // 2,
            "features": features,
        },
        "train": {
            "params": {"hidden_layer_sizes": [16], "max_iter": 400}
            if kind == "mlp_classifier"
            else ({} if classifier else {"n_clusters": 4, "threshold_method": "mad"})
        },
        "gate": (
            {"metric": "accuracy", "threshold": 0.5}
            if classifier
            else {"metric": "silhouette", "threshold": 0.2}
        ),
        "export": {"quantize": quantize},
    }


def signal_config(kind: str = "kmeans_anomaly", quantize: str = "none") -> ModelConfig:
    return parse_config(signal_doc(kind, quantize))


# Four operating modes of a machine: shaft tone (Hz), its amplitude, noise level.
_MODES = ((25.0, 1.0, 0.1), (60.0, 2.0, 0.2), (120.0, 0.5, 0.05), (300.0, 3.0, 0.4))


def signal_windows(
    rows: int, seed: int, outlier_share: float = 0.0
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Raw [rows, window x 3] accelerometer windows (z carries gravity) and each one's mode.

    Outliers (mode -1) are broadband bursts: a bearing knocking.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(SIGNAL_WINDOW) / SIGNAL_RATE
    modes = rng.integers(0, len(_MODES), rows)
    out = np.empty((rows, SIGNAL_WINDOW, 3))
    for i, m in enumerate(modes):
        freq, amp, noise = _MODES[m]
        freq *= rng.uniform(0.97, 1.03)
        phase = rng.uniform(0, 2 * np.pi, 3)
        gains = np.array([1.0, 0.6, 0.3]) * amp * rng.uniform(0.9, 1.1)
        tone = np.sin(2 * np.pi * freq * t[:, None] + phase[None, :]) * gains[None, :]
        out[i] = tone + rng.normal(0.0, noise, (SIGNAL_WINDOW, 3))
    knocks = rng.random(rows) < outlier_share
    out[knocks] += rng.normal(0.0, 4.0, (int(knocks.sum()), SIGNAL_WINDOW, 3))
    modes[knocks] = -1
    out[:, :, 2] += 9.81
    return out.reshape(rows, -1), modes.astype(np.int64)
