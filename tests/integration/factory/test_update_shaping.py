"""What makes a retrain cheap to ship: sparse updates, reused int8 scales, stable
cluster order, and a cold fit that replaces a warm start only when clearly better."""

from __future__ import annotations

import numpy as np

from edgeloop.delta import compress_full, make_patch
from edgeloop.factory.config import ModelConfig, parse_config
from edgeloop.factory.export import int8_scales
from edgeloop.factory.run import train_run
from edgeloop.factory.sparsify import decisions, same_layout, sparsify
from edgeloop.factory.training import align, fit, split
from tests.factories import as_dataset, digits_share, kmeans_config, planted_outliers


def _digits(quantize: str = "int8", tolerance: float | None = None) -> ModelConfig:
    export: dict[str, object] = {"quantize": quantize}
    if tolerance is not None:
        export["sparsify_tolerance"] = tolerance
    return parse_config(
        {
            "model": {
                "name": "digits",
                "kind": "mlp_classifier",
                "n_features": 64,
                "classes": list(range(10)),
            },
            "train": {
                "params": {"hidden_layer_sizes": [32], "warm_max_iter": 100},
                # keep the warm start, so the sparse path is what is measured
                "cold_challenger": False,
            },
            "gate": {"metric": "accuracy", "threshold": 0.0},
            "export": export,
        }
    )


def test_a_sparse_update_agrees_with_the_dense_retrain_and_ships_far_fewer_bytes() -> None:
    dense_config, sparse_config = _digits(), _digits(tolerance=0.01)
    v1 = train_run(dense_config, digits_share(0.45))
    assert v1.model is not None
    assert v1.tflite is not None
    data = digits_share(0.6)
    dense = train_run(dense_config, data, v1.model)
    sparse = train_run(sparse_config, data, v1.model)
    assert dense.tflite is not None
    assert sparse.tflite is not None
    assert sparse.model is not None
    assert dense.model is not None
    report = sparse.record["sparsify"]
    assert report["kept_share"] < 1.0, report
    # The promise: on every row it saw, the sparse model decides like the dense one
    # on all but the tolerated share.
    parts = split(data, sparse_config)
    rows = np.concatenate([parts.X_train, parts.X_holdout])
    agree = np.mean(decisions(sparse.model, rows) == decisions(dense.model, rows))
    assert agree >= 0.99
    assert report["agreement"] == agree
    # Weights outside the kept share are bit-for-bit the champion's.
    unchanged = np.mean(sparse.model.estimator.coefs_[0] == v1.model.estimator.coefs_[0])
    assert unchanged >= 1.0 - report["kept_share"] - 1e-9
    sparse_patch = len(make_patch(v1.tflite, sparse.tflite, "wdiff"))
    dense_patch = len(make_patch(v1.tflite, dense.tflite, "wdiff"))
    assert sparse_patch < 0.6 * dense_patch, (sparse_patch, dense_patch)
    assert sparse_patch < len(compress_full(sparse.tflite))


def test_int8_scales_carry_over_so_unchanged_channels_keep_their_bytes() -> None:
    config = _digits(tolerance=0.01)
    v1 = train_run(config, digits_share(0.45))
    assert v1.model is not None
    v2 = train_run(config, digits_share(0.6), v1.model)
    assert v2.model is not None
    assert v2.model.int8_base == int8_scales(v1.model)
    old, new = int8_scales(v1.model), int8_scales(v2.model)
    kept = sum(a == b for name in old for a, b in zip(old[name], new[name], strict=True))
    total = sum(len(v) for v in old.values())
    assert kept >= 0.75 * total, (kept, total)


def test_a_warm_start_stuck_on_too_few_modes_loses_to_a_cold_fit() -> None:
    """The first model saw two of four modes; warm-starting from its centroids
    leaves a mode uncovered. The cold challenger finds all four, and its
    centroids are numbered like the champion's."""
    config = kmeans_config(threshold=0.0)
    X, _ = planted_outliers(3000, seed=3, outlier_share=0.0)
    centers = np.random.default_rng(42).normal(0.0, 8.0, size=(4, 8))
    nearest = ((X[:, None, :] - centers[None]) ** 2).sum(axis=2).argmin(axis=1)
    early = X[nearest < 2][:400]
    v1 = train_run(config, as_dataset(early))
    assert v1.model is not None
    # 3x the rows: under train.refit_scaler_growth, so the warm start is tried.
    v2 = train_run(config, as_dataset(X[:1200]), v1.model)
    assert v2.record["cold_challenger"]["kept"] == "cold", v2.record["cold_challenger"]
    assert v2.record["start"].startswith("cold start: a fit from scratch")
    # Every mode now has its own centroid.
    assert v2.model is not None
    found = v2.model.estimator.cluster_centers_ * v2.model.scale + v2.model.mean
    assert all(np.min(np.linalg.norm(found - c, axis=1)) < 1.0 for c in centers)


def test_a_cold_fit_no_better_than_the_warm_start_does_not_replace_it() -> None:
    config = kmeans_config(threshold=0.0)
    X, _ = planted_outliers(4000, seed=4, outlier_share=0.0)
    v1 = train_run(config, as_dataset(X[:2000]))
    assert v1.model is not None
    v2 = train_run(config, as_dataset(X), v1.model)
    assert v2.record["cold_challenger"]["kept"] == "warm"
    assert v2.record["start"] == "warm start from the champion"


def test_align_numbers_cold_centroids_like_the_champion() -> None:
    config = kmeans_config()
    X, _ = planted_outliers(2000, seed=5, outlier_share=0.0)
    parts = split(as_dataset(X), config)
    champion, _ = fit(config, parts, None)
    shuffled, _ = fit(config, parts, None)
    est = shuffled.estimator
    est.cluster_centers_ = est.cluster_centers_[[2, 0, 3, 1]]
    align(shuffled, champion)
    assert np.allclose(est.cluster_centers_, champion.estimator.cluster_centers_)


def test_sparsify_leaves_a_model_with_another_layout_dense() -> None:
    config = _digits()
    a = train_run(config, digits_share(0.3)).model
    b = train_run(config, digits_share(0.5)).model  # a cold fit: its own scaler
    assert a is not None
    assert b is not None
    assert not same_layout(a, b)
    result = sparsify(b, a, np.zeros((4, 64)), 0.01)
    assert result.model is b
    assert result.note.startswith("dense")
