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
