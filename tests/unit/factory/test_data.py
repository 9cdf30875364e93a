"""Bad batches are quarantined with a reason, and the run goes on with the good ones."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

from edgeloop.factory.data import Batch, NoUsableData, Quarantined, assemble, read_batch
from tests.factories import digits_config, kmeans_config

DIGITS = digits_config()
KMEANS = kmeans_config()


def _npz(**arrays: object) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def _csv(header: str, *rows: str) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def _quarantined(item: Batch | Quarantined, reason: str) -> Quarantined:
    assert isinstance(item, Quarantined), f"expected quarantine ({reason}), got a batch"
    assert item.reason == reason, item.detail
    return item


def test_good_npz_and_csv_batches_are_read() -> None:
    X = np.arange(16.0).reshape(2, 8)
    npz = read_batch("a.npz", _npz(X=X), KMEANS)
    assert isinstance(npz, Batch)
    assert npz.rows == 2
    csv = read_batch("b.csv", _csv(",".join(f"f{i}" for i in range(8)), "1,2,3,4,5,6,7,8"), KMEANS)
    assert isinstance(csv, Batch)
    assert csv.X.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8]]


def test_csv_labels_come_from_the_label_column_anywhere_in_the_row() -> None:
    header = "label," + ",".join(f"p{i}" for i in range(64))
    batch = read_batch("d.csv", _csv(header, "7," + ",".join(["1"] * 64)), DIGITS)
    assert isinstance(batch, Batch)
    assert batch.y is not None
    assert batch.y.tolist() == [7]
    assert batch.X.shape == (1, 64)


def test_wrong_width_is_quarantined() -> None:
    item = _quarantined(read_batch("a.npz", _npz(X=np.ones((3, 5))), KMEANS), "wrong_width")
    assert "5 features, the model takes 8" in item.detail
    _quarantined(read_batch("b.csv", _csv("a,b", "1,2"), KMEANS), "wrong_width")
    _quarantined(read_batch("c.csv", _csv("a,b,c,d,e,f,g,h", "1,2,3"), KMEANS), "wrong_width")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_quarantined(bad: float) -> None:
    X = np.ones((4, 8))
    X[2, 5] = bad
    item = _quarantined(read_batch("a.npz", _npz(X=X), KMEANS), "non_finite")
    assert "row 2, column 5" in item.detail


def test_empty_batches_are_quarantined() -> None:
    _quarantined(read_batch("a.npz", _npz(X=np.ones((0, 8))), KMEANS), "empty")
    _quarantined(read_batch("b.csv", _csv(",".join("abcdefgh")), KMEANS), "empty")
    _quarantined(read_batch("c.csv", b"", KMEANS), "empty")


def test_non_numeric_cells_are_quarantined() -> None:
    item = _quarantined(
        read_batch("a.csv", _csv(",".join("abcdefgh"), "1,2,3,4,five,6,7,8"), KMEANS), "non_numeric"
    )
    assert "line 2" in item.detail
    _quarantined(read_batch("b.npz", _npz(X=np.array([["a"] * 8])), KMEANS), "non_numeric")


def test_classifier_batches_without_labels_are_quarantined() -> None:
    _quarantined(read_batch("a.npz", _npz(X=np.ones((2, 64))), DIGITS), "missing_labels")
    header = ",".join(f"p{i}" for i in range(64))
    _quarantined(read_batch("b.csv", _csv(header, ",".join(["1"] * 64)), DIGITS), "missing_labels")


def test_labels_outside_the_declared_classes_are_quarantined() -> None:
    item = read_batch("a.npz", _npz(X=np.ones((2, 64)), y=np.array([3, 12])), DIGITS)
    assert "[12]" in _quarantined(item, "unknown_class").detail
    _quarantined(
        read_batch("b.npz", _npz(X=np.ones((2, 64)), y=np.array([1.5, 2])), DIGITS), "bad_labels"
    )
    _quarantined(
        read_batch("c.npz", _npz(X=np.ones((2, 64)), y=np.array([1])), DIGITS), "label_mismatch"
    )


def test_unreadable_and_pickled_files_are_quarantined_not_loaded() -> None:
    _quarantined(read_batch("a.npz", b"PK\x03\x04 not a zip", KMEANS), "unreadable")
    pickled = _npz(X=np.array([object()] * 8, dtype=object).reshape(1, 8))
    _quarantined(read_batch("b.npz", pickled, KMEANS), "unreadable")
    _quarantined(read_batch("c.csv", b"\xff\xfe\x00", KMEANS), "unreadable")
    _quarantined(read_batch("d.parquet", pickle.dumps([1]), KMEANS), "unknown_format")


def test_a_run_goes_on_with_the_good_batches() -> None:
    good = read_batch("good.npz", _npz(X=np.ones((5, 8))), KMEANS)
    bad = read_batch("bad.npz", _npz(X=np.ones((5, 3))), KMEANS)
    dataset = assemble([bad, good], KMEANS)
    assert dataset.rows == 5
    snapshot = dataset.snapshot()
    assert [b["key"] for b in snapshot["batches"]] == ["good.npz"]
    assert snapshot["quarantined"][0]["key"] == "bad.npz"
    assert snapshot["quarantined"][0]["reason"] == "wrong_width"
    assert len(snapshot["batches"][0]["sha256"]) == 64


def test_a_run_with_no_good_data_fails_clearly() -> None:
    bad = read_batch("bad.npz", _npz(X=np.ones((5, 3))), KMEANS)
    with pytest.raises(
        NoUsableData, match=r"no usable data for model vibration: bad\.npz: wrong_width"
    ):
        assemble([bad], KMEANS)
    with pytest.raises(NoUsableData, match="no batches"):
        assemble([], KMEANS)
