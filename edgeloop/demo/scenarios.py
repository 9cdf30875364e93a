"""The demo's two stories: digits (the seed's classifier) and anomaly (k-means on vibration)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge.sources import Sample, synthetic_vibration

# The digits model as models/digits.toml trains and exports it (int8 weights,
# sparse updates: the configuration behind the README's bytes-per-update
# figure), with a gate for the demo's round sizes. tests/e2e/test_demo.py
# checks the [train] and [export] sections still match models/digits.toml.
DIGITS_TOML = """
[model]
name = "digits"
kind = "mlp_classifier"
n_features = 64
classes = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
label_column = "label"

[train]
seed = 0
holdout = 0.2
params = { hidden_layer_sizes = [32], alpha = 0.01, max_iter = 300, warm_max_iter = 100 }

[gate]
metric = "accuracy"
threshold = 0.85
min_improvement = 0.0
min_rows = 50

[export]
quantize = "int8"
sparsify_tolerance = 0.01

# A handful of devices: the named canaries, then a quarter, half, and everyone.
# Each stage waits for two installs (or all its devices, if it has fewer).
[rollout]
stages = [25, 50, 100]
healthy_to_advance = 2
window_minutes = 10
"""

ANOMALY_TOML = """
[model]
name = "vibration"
kind = "kmeans_anomaly"
n_features = 8

[train]
seed = 0
holdout = 0.2
params = { n_clusters = 4, threshold_method = "mad", mad_k = 6.0 }

[gate]
metric = "silhouette"
threshold = 0.5
min_improvement = 0.002
min_rows = 50

[export]
quantize = "int8"

# A handful of devices: the named canaries, then a quarter, half, and everyone.
# Each stage waits for two installs (or all its devices, if it has fewer).
[rollout]
stages = [25, 50, 100]
healthy_to_advance = 2
window_minutes = 10
"""


@dataclass
class Scenario:
    name: str
    model: str
    config: str
    n_features: int
    # Per round, per device: the samples that device sees in that round.
    rounds: list[list[list[Sample]]]
    # What data each round brings; the demo adds whether a model is on board then.
    round_labels: list[str]
    # The final phase: samples scored on board after the last model is deployed.
    field_phase: list[list[Sample]]
    sample_rate: float
    batch_rows: int
    test_X: npt.NDArray[np.float32] | None = None  # noqa: N815 - the scikit-learn convention
    test_y: npt.NDArray[np.int64] | None = None
    notes: list[str] = field(default_factory=list)


def _split(items: list[Sample], shares: list[float]) -> list[list[Sample]]:
    cuts = [0] + [round(s * len(items)) for s in shares]
    return [items[a:b] for a, b in itertools.pairwise(cuts)]


def digits(devices: int, seed: int = 0) -> Scenario:
    """Each device holds a shard of scikit-learn's digits; a fifth is kept aside as a test set."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(X))
    test, fleet = order[: len(X) // 5], order[len(X) // 5 :]
    shards = np.array_split(fleet, devices)
    # Round 1 is about 10% of all the digits (too little to clear the gate);
    # round 2 brings the shards to 50% (the first model); rounds 3 and 4 bring
    # 75% and the rest, seen once a model runs (so only a
    # sample goes up): two retrains that may each ship an update as a patch.
    # The field phase classifies the test set on board.
    first = 0.1 * len(X) / len(fleet)
    shares = [first, 0.5, 0.75, 1.0]
    per_device = [
        _split([Sample(X[i].astype(np.float32), int(y[i])) for i in shard], shares)
        for shard in shards
    ]
    rounds = [[d[r] for d in per_device] for r in range(len(shares))]
    field_phase = [
        [Sample(X[i].astype(np.float32), int(y[i])) for i in part]
        for part in np.array_split(test, devices)
    ]
    return Scenario(
        name="digits",
        model="digits",
        config=DIGITS_TOML,
        n_features=64,
        rounds=rounds,
        round_labels=[
            "10% of the data",
            "more data arrives (50%)",
            "more data (75%)",
            "the rest of the data",
        ],
        field_phase=field_phase,
        sample_rate=0.3,
        batch_rows=32,
        test_X=X[test].astype(np.float32),
        test_y=y[test].astype(np.int64),
    )


def anomaly(devices: int, seed: int = 0) -> Scenario:
    """Devices stream vibration features with planted anomalies (1%)."""

    def stream(device: int, start: int, count: int) -> list[Sample]:
        samples: Iterator[Sample] = synthetic_vibration(
            8, 0.01, seed=seed * 1000 + device * 7 + start, count=count
        )
        return list(samples)

    per_round = [20, 150, 150]
    rounds = [[stream(d, r, n) for d in range(devices)] for r, n in enumerate(per_round)]
    field_phase = [stream(d, 99, 1500) for d in range(devices)]
    return Scenario(
        name="anomaly",
        model="vibration",
        config=ANOMALY_TOML,
        n_features=8,
        rounds=rounds,
        round_labels=["a few minutes of data", "more data arrives", "more of the same"],
        field_phase=field_phase,
        sample_rate=0.05,
        batch_rows=25,
    )


SCENARIOS = {"digits": digits, "anomaly": anomaly}
