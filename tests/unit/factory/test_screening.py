"""Screening: a device whose labels disagree with the fleet's is left out of a classifier run."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.datasets import load_digits

from edgeloop.factory.config import ModelConfig
from edgeloop.factory.data import Batch, Dataset, assemble, read_batch
from edgeloop.factory.run import train_run
from edgeloop.factory.screening import screen
from edgeloop.factory.training import split
from tests.factories import digits_config, kmeans_config, planted_outliers

DIGITS = digits_config(threshold=0.9)
X_ALL, Y_ALL = load_digits(return_X_y=True)
ORDER = np.random.default_rng(3).permutation(len(X_ALL))


def _batch(
    config: ModelConfig, thing: str, X: npt.NDArray[np.float64], y: npt.NDArray[np.int64] | None
) -> Batch:
    buffer = io.BytesIO()
    if y is None:
        np.savez(buffer, X=X)
    else:
        np.savez(buffer, X=X, y=y)
    item = read_batch(f"data/{config.model.name}/{thing}/0001.npz", buffer.getvalue(), config)
    assert isinstance(item, Batch), item
    return item


def _digits(
    devices: int, rows: int, shift: dict[int, int] | None = None, start: int = 0
) -> Dataset:
    """`devices` devices of `rows` digits each; device d adds shift[d] to its labels."""
    items = []
    for d in range(devices):
        idx = ORDER[start + d * rows : start + (d + 1) * rows]
        y = (Y_ALL[idx] + (shift or {}).get(d, 0)) % 10
        items.append(_batch(DIGITS, f"pump-{d:02d}", X_ALL[idx].astype(np.float64), y))
    return assemble(items, DIGITS)


def test_a_device_whose_labels_disagree_with_the_fleet_is_screened_out() -> None:
    dataset = _digits(8, 80, shift={3: 1})
    result = screen(dataset, DIGITS)
    assert result.judge == "out_of_fold"
    assert [a.device for a in result.screened] == ["pump-03"]
    assert result.screened[0].agreement < 0.2 < 0.8 < (result.median or 0.0)
    # Its rows are gone from the run: neither trained on nor held out.
    parts = split(result.dataset, DIGITS)
    assert result.dataset.rows == dataset.rows - 80
    assert len(parts.X_train) + len(parts.X_holdout) == dataset.rows - 80
    assert "pump-03" not in parts.holdout_devices
    kept = {s.device: s.kept for s in result.dataset.devices}
    assert kept["pump-03"] == 0
    assert all(n == 80 for d, n in kept.items() if d != "pump-03")


@pytest.mark.parametrize("rows", [20, 60])
def test_honest_devices_are_not_screened(rows: int) -> None:
    # Clean digits over ten devices, in every slice of the data set. With 20
    # rows a device, several fleets agree perfectly but for a row or two
    # (MAD 0): only screen_min_gap keeps those devices in.
    for start in range(0, len(ORDER) - 10 * rows, 150):
        result = screen(_digits(10, rows, start=start), DIGITS)
        assert result.judge == "out_of_fold"
        assert result.screened == (), (start, [a.to_json(0.0) for a in result.screened])
        assert len(result.agreements) == 10


def test_the_run_record_names_each_screened_device_with_its_agreement() -> None:
    run = train_run(DIGITS, _digits(8, 80, shift={5: 3}))
    assert run.record["screening"]["judge"] == "out_of_fold"
    (entry,) = run.record["screened"]
    assert entry["device"] == "pump-05"
    assert entry["agreement"] < 0.2
    assert entry["median"] > 0.8
    assert {d["device"]: d["kept"] for d in run.record["data"]["devices"]}["pump-05"] == 0


def test_with_a_champion_the_champion_judges() -> None:
    first = train_run(DIGITS, _digits(6, 100))
    assert first.promoted, first.decision.reason
    result = screen(_digits(6, 60, shift={2: 1}, start=600), DIGITS, first.model)
    assert result.judge == "champion"
    assert [a.device for a in result.screened] == ["pump-02"]


def test_at_a_cold_start_with_a_reference_set_a_fit_on_it_judges() -> None:
    reference = Dataset(X=X_ALL[ORDER[-300:]].astype(np.float64), y=Y_ALL[ORDER[-300:]], batches=())
    result = screen(_digits(6, 60, shift={4: 1}), DIGITS, reference=reference)
    assert result.judge == "reference"
    assert [a.device for a in result.screened] == ["pump-04"]


def test_a_device_first_to_see_a_class_is_not_screened_for_it() -> None:
    # pump-00 alone has the 9s: no judge has seen a 9, so those rows are no evidence.
    items = []
    nines = ORDER[Y_ALL[ORDER] == 9][:60]
    others = ORDER[Y_ALL[ORDER] != 9]
    items.append(_batch(DIGITS, "pump-00", X_ALL[nines].astype(np.float64), Y_ALL[nines]))
    for d in range(1, 6):
        idx = others[d * 60 : (d + 1) * 60]
        items.append(_batch(DIGITS, f"pump-{d:02d}", X_ALL[idx].astype(np.float64), Y_ALL[idx]))
    result = screen(assemble(items, DIGITS), DIGITS)
    assert result.screened == ()
    assert "pump-00" not in {a.device for a in result.agreements}


def test_a_few_wrong_rows_are_not_enough_to_screen_a_device() -> None:
    # One wrong label of three is an agreement of 0.67, below the fleet's
    # median minus the gap, but three rows cannot show it is more than bad luck.
    items = [
        _batch(DIGITS, f"pump-{d:02d}", X_ALL[idx].astype(np.float64), Y_ALL[idx])
        for d, idx in enumerate(np.split(ORDER[:400], 5))
    ]
    few = ORDER[400:403]
    labels = Y_ALL[few].copy()
    labels[0] = (labels[0] + 1) % 10
    items.append(_batch(DIGITS, "pump-09", X_ALL[few].astype(np.float64), labels))
    result = screen(assemble(items, DIGITS), DIGITS)
    (few_rows,) = (a for a in result.agreements if a.device == "pump-09")
    assert few_rows.agreement < (result.below or 0.0) < few_rows.upper
    assert result.screened == ()


@pytest.mark.parametrize("devices", [1, 2])
def test_fewer_than_three_devices_are_not_screened(devices: int) -> None:
    result = screen(_digits(devices, 100, shift={0: 1}), DIGITS)
    assert result.judge == "none"
    assert result.dataset.rows == devices * 100


def test_screening_can_be_turned_off() -> None:
    config = DIGITS.model_copy(
        update={"train": DIGITS.train.model_copy(update={"screen_devices": False})}
    )
    result = screen(_digits(8, 80, shift={3: 1}), config)
    assert result.judge == "none"
    assert result.screened == ()


def test_k_means_is_not_screened() -> None:
    config = kmeans_config()
    items = []
    for d in range(5):
        X, _ = planted_outliers(200, seed=d)
        items.append(_batch(config, f"fan-{d}", X, None))
    dataset = assemble(items, config)
    result = screen(dataset, config)
    assert result.judge == "none"
    assert result.dataset is dataset


def test_screening_is_deterministic() -> None:
    dataset = _digits(8, 80, shift={3: 1, 6: 2})
    first, again = screen(dataset, DIGITS), screen(dataset, DIGITS)
    assert first.to_json() == again.to_json()
    assert {a.device for a in first.screened} == {"pump-03", "pump-06"}
