"""Each issue-14 guard on its own: bounded decoding, device share, device split, gate, reference."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from edgeloop.factory.config import ConfigError, GateSection, ModelConfig, parse_config
from edgeloop.factory.data import (
    Batch,
    Dataset,
    Quarantined,
    assemble,
    decoded_size,
    device_from_key,
    read_batch,
)
from edgeloop.factory.gate import Paired, decide
from edgeloop.factory.training import holdout_devices, holdout_mask, split
from tests.factories import digits_config, kmeans_config

KMEANS = kmeans_config()
DIGITS = digits_config()


def _npz(**arrays: object) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def _batch(device: str, rows: int, value: float = 0.0) -> Batch:
    item = read_batch(
        f"data/vibration/{device}/0001.npz", _npz(X=np.full((rows, 8), value)), KMEANS
    )
    assert isinstance(item, Batch)
    return item


def test_the_device_comes_from_the_upload_key_else_local() -> None:
    assert device_from_key("data/digits/pump-7/0001.npz") == "pump-7"
    assert device_from_key("/home/me/batch.npz") == "local"
    assert device_from_key("data/digits/x.npz") == "local"
    item = read_batch("x.npz", _npz(X=np.ones((2, 8))), KMEANS, device="pump-1")
    assert item.device == "pump-1"


def test_decoded_size_is_told_from_headers_and_matches_the_decoded_batch() -> None:
    data = _npz(X=np.ones((50, 64), dtype=np.float32), y=np.arange(50) % 10)
    item = read_batch("a.npz", data, DIGITS)
    assert isinstance(item, Batch)
    assert decoded_size("a.npz", data, DIGITS) == item.decoded_bytes == 50 * 64 * 8 + 50 * 8
    header = "label," + ",".join(f"p{i}" for i in range(64))
    csv = (header + "\n" + ("1," + ",".join(["2"] * 64) + "\n") * 5).encode()
    csv_item = read_batch("a.csv", csv, DIGITS)
    assert isinstance(csv_item, Batch)
    assert decoded_size("a.csv", csv, DIGITS) == 5 * 65 * 8 == csv_item.decoded_bytes
    assert decoded_size("bad.npz", b"PK not a zip", DIGITS) == 0


def test_an_npz_header_over_the_budget_is_refused_and_its_decoded_size_says_so() -> None:
    data = _npz(X=np.ones((100, 8)))
    item = read_batch("a.npz", data, KMEANS, max_decoded_bytes=100 * 8 * 8 - 1)
    assert isinstance(item, Quarantined)
    assert item.reason == "too_large"
    assert isinstance(read_batch("a.npz", data, KMEANS, max_decoded_bytes=100 * 8 * 8), Batch)


def test_npz_headers_are_judged_before_the_data_is_read() -> None:
    # Headers only, no data: any attempt to read would be "unreadable".
    def headers_only(x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:
            for name, shape, descr in (("X", x_shape, "<f8"), ("y", y_shape, "<i8")):
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    header, {"descr": descr, "fortran_order": False, "shape": shape}
                )
                zf.writestr(f"{name}.npy", header.getvalue())
        return out.getvalue()

    for shapes, reason in (
        (((10, 5), (10,)), "wrong_width"),
        (((10, 64, 2), (10,)), "wrong_shape"),
        (((10, 64), (9,)), "label_mismatch"),
    ):
        item = read_batch("a.npz", headers_only(*shapes), DIGITS)
        assert isinstance(item, Quarantined)
        assert item.reason == reason, item.detail


def test_csv_extra_columns_only_beside_declared_feature_names() -> None:
    named = parse_config(
        {
            "model": {
                "name": "v",
                "kind": "kmeans_anomaly",
                "n_features": 2,
                "feature_names": ["a", "b"],
            },
            "gate": {"metric": "silhouette", "threshold": 0.5},
        }
    )
    data = b"time,a,b\n1,2,3\n"
    item = read_batch("x.csv", data, named)
    assert isinstance(item, Batch)
    assert item.X.tolist() == [[2.0, 3.0]]
    unnamed = read_batch("x.csv", b"time,a,b,c,d,e,f,g,h\n" + b"1," * 8 + b"1\n", KMEANS)
    assert isinstance(unnamed, Quarantined)
    assert unnamed.reason == "wrong_width"


def test_a_csv_with_more_lines_than_the_budget_is_refused_before_parsing() -> None:
    data = ("a,b,c,d,e,f,g,h\n" + "x\n" * 1000).encode()  # would be non_numeric if parsed
    item = read_batch("x.csv", data, KMEANS, max_decoded_bytes=100 * 8 * 8)
    assert isinstance(item, Quarantined)
    assert item.reason == "too_large"


def test_a_row_wider_than_the_header_is_refused_before_csv_splits_it() -> None:
    data = ("a,b,c,d,e,f,g,h\n1,2,3,4,5,6,7,8\n" + "1," * 100_000 + "\n").encode()
    item = read_batch("x.csv", data, KMEANS)
    assert isinstance(item, Quarantined)
    assert item.reason == "wrong_width"
    assert "line 3" in item.detail


def test_the_device_cap_keeps_every_device_within_its_share() -> None:
    dataset = assemble(
        [_batch("loud", 1000, 1.0), *(_batch(f"d{i}", 100) for i in range(5))], KMEANS
    )
    kept = {d.device: d.kept for d in dataset.devices}
    assert kept["loud"] / dataset.rows <= 0.25 + 1e-9
    assert all(kept[f"d{i}"] == 100 for i in range(5))
    assert dataset.snapshot()["device_cap_rows"] == dataset.device_cap
    # Rows left out are said, with the setting that left them out.
    (said,) = dataset.snapshot()["trimmed"]
    assert said.startswith(f"loud: kept {kept['loud']} of its 1000 rows")
    assert "train.max_device_share" in said


def test_two_devices_a_row_apart_say_why_one_row_is_left_out() -> None:
    two = assemble([_batch("a", 57), _batch("b", 56)], KMEANS)
    assert two.rows == 112
    assert two.trimmed() == [
        "a: kept 56 of its 57 rows, so that no device holds more than its share of the run "
        "(train.max_device_share, or 1/2 with 2 devices): at most 56 rows each"
    ]
    assert assemble([_batch("only", 57)], KMEANS).trimmed() == []


def test_one_device_or_the_cli_trains_on_everything() -> None:
    assert assemble([_batch("only", 1000)], KMEANS).rows == 1000
    two = assemble([_batch("a", 1000), _batch("b", 100)], KMEANS)
    assert {d.device: d.kept for d in two.devices} == {"a": 100, "b": 100}


def test_the_device_cap_subsamples_the_same_rows_every_time() -> None:
    items = [_batch("loud", 400), *(_batch(f"d{i}", 40) for i in range(4))]
    items[0] = Batch(items[0].key, items[0].sha256, np.arange(3200.0).reshape(400, 8), None, "loud")
    first, second = assemble(items, KMEANS), assemble(list(reversed(items)), KMEANS)
    np.testing.assert_array_equal(first.X, second.X)
    loud_rows = first.X[first.X[:, 0] > 0][:, 0]
    assert np.all(np.diff(loud_rows) > 0)  # kept in upload order


def test_the_device_share_can_be_configured() -> None:
    config = parse_config(
        {
            "model": {"name": "v", "kind": "kmeans_anomaly", "n_features": 8},
            "train": {"max_device_share": 1.0},
            "gate": {"metric": "silhouette", "threshold": 0.5},
        }
    )
    dataset = assemble([_batch("loud", 1000), *(_batch(f"d{i}", 100) for i in range(5))], config)
    assert dataset.rows == 1500


def test_held_out_devices_are_about_the_holdout_share_and_never_all() -> None:
    counts = {f"pump-{i}": 50 for i in range(20)}
    held = holdout_devices(counts, seed=0, share=0.2)
    assert 3 <= len(held) <= 5
    assert holdout_devices(counts, seed=0, share=0.2) == held
    assert len(holdout_devices({"a": 10, "b": 1000}, 0, 0.2)) == 1
    assert holdout_devices({"a": 10}, 0, 0.2) == ()


def test_the_row_hash_split_remains_for_one_device_or_none() -> None:
    X = np.random.default_rng(0).normal(size=(300, 8))
    plain = split(Dataset(X=X, y=None, batches=()), KMEANS)
    assert plain.by == "row"
    mask = holdout_mask(X, None, KMEANS.train.seed, KMEANS.train.holdout)
    np.testing.assert_array_equal(plain.X_holdout, X[mask])
    one = assemble([Batch("a.npz", "", X, None, "pump-1")], KMEANS)
    assert split(one, KMEANS).by == "row"


def _gate(**fields: object) -> GateSection:
    return GateSection.model_validate({"metric": "accuracy", "threshold": 0.9, **fields})


def test_a_tie_is_refused_even_with_no_minimum_improvement() -> None:
    decision = decide(_gate(min_improvement=0.0), 0.95, 0.95, 400, Paired(3, 3))
    assert not decision.promoted
    assert "ties the champion" in decision.reason
    assert "nothing to ship" in decision.reason


def test_an_insignificant_improvement_is_refused_and_a_significant_one_ships() -> None:
    small = decide(_gate(), 0.96, 0.95, 400, Paired(8, 4))
    assert not small.promoted
    assert "not a significant improvement" in small.reason
    assert (small.wins, small.losses) == (8, 4)
    assert decide(_gate(), 0.99, 0.95, 400, Paired(20, 4)).promoted
    assert not decide(_gate(significance=0.001), 0.99, 0.95, 400, Paired(20, 10)).promoted


def test_min_improvement_still_applies_beside_significance() -> None:
    assert not decide(_gate(min_improvement=0.05), 0.99, 0.95, 400, Paired(40, 0)).promoted


def test_silhouette_needs_the_margin_over_the_champion() -> None:
    gate = GateSection.model_validate({"metric": "silhouette", "threshold": 0.5})
    assert not decide(gate, 0.71, 0.70, 100).promoted
    assert decide(gate, 0.73, 0.70, 100).promoted


def test_paired_counts_rows_only_one_model_gets_right() -> None:
    right_c = np.array([True, True, False, False, True])
    right_i = np.array([True, False, True, False, False])
    assert Paired.of(right_c, right_i) == Paired(2, 1)


@pytest.mark.parametrize(
    "prefix",
    ["data/digits/", "quarantine/digits/", "/abs/", "ref/../data/", "dat", "reference/digits"],
)
def test_a_reference_prefix_devices_can_write_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigError, match=r"gate\.reference"):
        parse_config(
            {
                "model": {"name": "v", "kind": "kmeans_anomaly", "n_features": 8},
                "gate": {"metric": "silhouette", "threshold": 0.5, "reference": prefix},
            }
        )


def _digits_with_reference() -> tuple[ModelConfig, Dataset, Dataset]:
    from tests.factories import digits_share

    config = parse_config(
        {
            "model": {
                "name": "digits",
                "kind": "logistic_classifier",
                "n_features": 64,
                "classes": list(range(10)),
            },
            "gate": {"metric": "accuracy", "threshold": 0.9, "reference": "reference/digits/"},
        }
    )
    data = digits_share(0.5)
    reference = digits_share(1.0, seed=1)
    assert reference.y is not None
    return config, data, Dataset(X=reference.X[:300], y=reference.y[:300], batches=())


def test_a_config_naming_a_reference_refuses_to_ship_without_one() -> None:
    from edgeloop.factory.run import train_run

    config, data, _ = _digits_with_reference()
    result = train_run(config, data)
    assert not result.promoted
    assert "no reference set" in result.decision.reason
    assert result.record["reference"]["passed"] is False


def test_reference_metrics_are_recorded_and_a_good_candidate_ships() -> None:
    from edgeloop.factory.run import train_run

    config, data, reference = _digits_with_reference()
    result = train_run(config, data, None, reference)
    assert result.promoted, result.decision.reason
    entry = result.record["reference"]
    assert entry["rows"] == 300
    assert entry["metrics"]["accuracy"] >= 0.9
    assert entry["passed"] is True
