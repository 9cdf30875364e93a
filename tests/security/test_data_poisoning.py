"""One device must not be able to poison, stall or outvote a model (issue 14, the factory side).

Each test plays one attack through the path the retrain function takes:
upload bytes through `read_batch` (with the device the upload key names),
`assemble`, then `train_run` against a champion.
"""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.datasets import load_digits

from edgeloop.factory.config import ModelConfig, parse_config
from edgeloop.factory.data import Batch, Quarantined, assemble, read_batch, reference_set
from edgeloop.factory.run import train_run
from edgeloop.factory.training import TrainedModel, split


def _config(threshold: float = 0.8, min_improvement: float = 0.005, **gate: Any) -> ModelConfig:
    return parse_config(
        {
            "model": {
                "name": "digits",
                "kind": "mlp_classifier",
                "n_features": 64,
                "classes": list(range(10)),
            },
            "train": {"params": {"hidden_layer_sizes": [32], "alpha": 0.01}},
            "gate": {
                "metric": "accuracy",
                "threshold": threshold,
                "min_improvement": min_improvement,
                **gate,
            },
        }
    )


DIGITS = _config()
X_ALL, Y_ALL = (np.asarray(a) for a in load_digits(return_X_y=True))
ORDER = np.random.default_rng(7).permutation(len(X_ALL))


def _npz(X: npt.NDArray[Any], y: npt.NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y)
    return buffer.getvalue()


def _upload(thing: str, n: int, X: npt.NDArray[Any], y: npt.NDArray[Any]) -> Batch | Quarantined:
    """One upload as the retrain reads it: real bytes under the thing's key."""
    return read_batch(f"data/digits/{thing}/{n:04d}.npz", _npz(X, y), DIGITS)


def _header_only_npz(shape: tuple[int, ...], y_rows: int | None = None) -> bytes:
    """A few hundred bytes whose .npy headers declare `shape`, with no data behind them."""

    def header(shape: tuple[int, ...], descr: str) -> bytes:
        out = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            out, {"descr": descr, "fortran_order": False, "shape": shape}
        )
        return out.getvalue()

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("X.npy", header(shape, "<f8"))
        zf.writestr("y.npy", header((shape[0] if y_rows is None else y_rows,), "<i8"))
    return archive.getvalue()


def _honest(devices: int, rows: int, start: int = 0) -> list[Batch | Quarantined]:
    items = []
    for d in range(devices):
        idx = ORDER[start + d * rows : start + (d + 1) * rows]
        items.append(_upload(f"pump-{d}", 0, X_ALL[idx], Y_ALL[idx]))
    return items


def _accuracy(model: TrainedModel, idx: npt.NDArray[np.intp]) -> float:
    return float(np.mean(model.predict(X_ALL[idx].astype(np.float64)) == Y_ALL[idx]))


def test_an_npz_whose_header_declares_an_enormous_shape_is_quarantined_before_allocation() -> None:
    # 2M x 64 float64 is 1 GB: small enough that a reader which trusts the
    # header allocates it, large enough to be far over the per-batch budget.
    data = _header_only_npz((2_000_000, 64))
    assert len(data) < 1000
    tracemalloc.start()
    try:
        item = read_batch("data/digits/pump-0/0001.npz", data, DIGITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(item, Quarantined)
    assert item.reason == "too_large", item.detail
    assert item.device == "pump-0"
    assert peak < 32 * 2**20, f"{peak:,} bytes allocated while refusing it"


def test_a_compressed_npz_bomb_is_quarantined_from_its_declared_size() -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in (("X", np.zeros((600_000, 64))), ("y", np.zeros(600_000, int))):
            raw = io.BytesIO()
            np.save(raw, array)
            zf.writestr(f"{name}.npy", raw.getvalue())
    data = archive.getvalue()
    assert len(data) < 400_000  # about 1,000:1
    item = read_batch("data/digits/pump-0/0001.npz", data, DIGITS)
    assert isinstance(item, Quarantined)
    assert item.reason == "bomb", item.detail


def test_a_csv_with_hundreds_of_thousands_of_columns_is_quarantined() -> None:
    data = (",".join(f"c{i}" for i in range(300_000)) + "\n" + "1," * 299_999 + "1\n").encode()
    tracemalloc.start()
    try:
        item = read_batch("data/digits/pump-0/0001.csv", data, DIGITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(item, Quarantined)
    assert item.reason == "wrong_width", item.detail
    assert "300,000 columns" in item.detail
    # The text itself is a few MB; a parsed header would be 300,000 strings on top.
    assert peak < 4 * len(data) + 2**20, f"{peak:,} bytes allocated while refusing it"


def test_a_memory_error_while_decoding_quarantines_that_upload_and_the_run_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = np.lib.format.read_array
    calls = {"n": 0}

    def first_call_runs_out_of_memory(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("simulated: the allocator refused")
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "read_array", first_call_runs_out_of_memory)
    idx = ORDER[:200]
    exhausted = _upload("pump-0", 1, X_ALL[idx], Y_ALL[idx])
    others = _honest(4, 120, start=200)
    assert isinstance(exhausted, Quarantined)
    assert exhausted.reason == "out_of_memory", exhausted.detail
    dataset = assemble([exhausted, *others], DIGITS)
    assert dataset.rows == 4 * 120
    assert [q.key for q in dataset.quarantined] == [exhausted.key]


def test_a_good_batch_beside_a_bomb_still_trains() -> None:
    bomb = read_batch("data/digits/pump-9/0001.npz", _header_only_npz((10**9, 64)), DIGITS)
    good = _honest(5, 150)
    dataset = assemble([bomb, *good], DIGITS)
    result = train_run(DIGITS, dataset)
    assert result.promoted, result.decision.reason
    quarantined = result.record["data"]["quarantined"]
    assert [(q["device"], q["reason"]) for q in quarantined] == [("pump-9", "too_large")]
    assert result.record["data"]["rows"] == 5 * 150


def test_one_device_cannot_hold_more_than_its_share_of_a_run() -> None:
    honest = _honest(6, 50)
    idx = ORDER[300:1500]
    loud = [_upload("loud", n, X_ALL[part], Y_ALL[part]) for n, part in enumerate(np.split(idx, 4))]
    dataset = assemble([*honest, *loud], DIGITS)
    shares = {d.device: d.kept / dataset.rows for d in dataset.devices}
    assert shares["loud"] <= DIGITS.train.max_device_share + 1e-9
    assert dataset.rows >= 6 * 50  # every honest row stays
    uploaded = {d.device: d.uploaded for d in dataset.devices}
    assert uploaded["loud"] == 1200


def test_held_out_rows_never_come_from_a_device_that_trained() -> None:
    items = []
    for d in range(10):
        idx = ORDER[d * 60 : (d + 1) * 60]
        X = X_ALL[idx].astype(np.float64)
        X[:, 0] = 100 + d  # a digit's corner pixel is blank; here it names the device
        items.append(read_batch(f"data/digits/pump-{d}/0001.npz", _npz(X, Y_ALL[idx]), DIGITS))
    parts = split(assemble(items, DIGITS), DIGITS)
    trained = set(parts.X_train[:, 0].tolist())
    judged = set(parts.X_holdout[:, 0].tolist())
    assert judged, "nothing was held out"
    assert trained.isdisjoint(judged)
    assert 0.1 <= len(parts.X_holdout) / 600 <= 0.3


def test_a_candidate_that_regresses_on_the_reference_set_is_refused() -> None:
    # A champion from clean data; then one device's upload is every row of the
    # run, labels shifted by one. Judged on its own rows it looks excellent.
    config = _config(reference="reference/digits/", reference_tolerance=0.01)
    poison, ref = ORDER[500:1300], ORDER[1300:1600]
    champion_run = train_run(config, assemble(_honest(5, 100), config), None, _reference(ref))
    assert champion_run.promoted, champion_run.decision.reason
    shifted = (Y_ALL[poison] + 1) % 10
    run = train_run(
        config,
        assemble([_upload("mallory", 1, X_ALL[poison], shifted)], config),
        champion_run.model,
        _reference(ref),
    )
    assert run.record["split"]["by"] == "row"  # one device: the held-out rows are its own
    assert run.record["metrics"]["accuracy"] > 0.8  # ... and they say ship
    assert not run.promoted
    assert "on the reference set regresses" in run.decision.reason
    entry = run.record["reference"]
    assert entry["passed"] is False
    assert entry["metrics"]["accuracy"] < entry["champion_metrics"]["accuracy"] - 0.01


def _reference(idx: npt.NDArray[np.intp]) -> Any:
    item = read_batch("reference/digits/clean.npz", _npz(X_ALL[idx], Y_ALL[idx]), DIGITS)
    return reference_set([item], DIGITS)


def test_a_tie_with_the_champion_is_not_shipped() -> None:
    # min_improvement 0.0, and one device replays the same upload again and again.
    config = _config(threshold=0.8, min_improvement=0.0)
    items = _honest(5, 120)
    first = train_run(config, assemble(items, config))
    assert first.promoted, first.decision.reason
    champion = first.model
    for replay in range(3):
        again = [*items, _upload("pump-0", replay + 1, X_ALL[ORDER[:120]], Y_ALL[ORDER[:120]])]
        run = train_run(config, assemble(again, config), champion)
        assert not run.promoted, run.decision.reason
        gate = run.record["gate"]
        assert "nothing to ship" in gate["reason"] or "does not beat" in gate["reason"]


def test_label_shifted_uploads_from_one_device_do_not_ship_a_worse_model() -> None:
    # As in the issue: one device's label-shifted upload fills most of a run.
    # Two honest devices trained the champion and upload 60 new rows each; the
    # attacker uploads 1,200 rows with every label shifted by one.
    early, late, poison, test = ORDER[:400], ORDER[400:520], ORDER[520:1720], ORDER[1720:]
    champion_run = train_run(
        DIGITS,
        assemble(
            [_upload(f"pump-{d}", 0, X_ALL[i], Y_ALL[i]) for d, i in enumerate(np.split(early, 2))],
            DIGITS,
        ),
    )
    assert champion_run.promoted, champion_run.decision.reason
    assert champion_run.model is not None
    champion_accuracy = _accuracy(champion_run.model, test)
    honest = [_upload(f"pump-{d}", 1, X_ALL[i], Y_ALL[i]) for d, i in enumerate(np.split(late, 2))]
    attack = _upload("mallory", 1, X_ALL[poison], (Y_ALL[poison] + 1) % 10)
    run = train_run(DIGITS, assemble([*honest, attack], DIGITS), champion_run.model)
    if run.promoted:
        assert run.model is not None
        assert _accuracy(run.model, test) >= champion_accuracy - 0.01, run.decision.reason


def _fleet(devices: int, rows: int, shifted: int | None, amplify: int = 5) -> list[Any]:
    """`devices` devices of `rows` digits each; device `shifted` shifts its labels by one
    and replays its rows `amplify` times over."""
    items = []
    for d in range(devices):
        idx = ORDER[d * rows : (d + 1) * rows]
        X, y = X_ALL[idx], Y_ALL[idx]
        if d == shifted:
            replay = np.random.default_rng(d).integers(0, rows, amplify * rows)
            X, y = X[replay], (y[replay] + 1) % 10
        items.append(_upload(f"pump-{d:02d}", 0, X, y))
    return items


def test_one_label_shifted_device_in_twenty_does_not_stall_the_model() -> None:
    # The benchmark's stall at test scale: one device of twenty shifts every
    # label by one and uploads five times an honest device's rows. Without
    # screening the candidate learns enough of the shift to fall below the
    # gate on the honest held-out devices (0.91 < 0.93), and nothing ships.
    config = _config(threshold=0.93)
    test = ORDER[20 * 60 :]
    clean = train_run(config, assemble(_fleet(20, 60, shifted=None), config))
    assert clean.promoted, clean.decision.reason
    assert clean.model is not None
    attacked = train_run(config, assemble(_fleet(20, 60, shifted=7), config))
    assert [d["device"] for d in attacked.record["screened"]] == ["pump-07"]
    assert attacked.promoted, attacked.decision.reason
    assert attacked.model is not None
    assert _accuracy(attacked.model, test) >= _accuracy(clean.model, test) - 0.01
