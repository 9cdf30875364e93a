"""`edgeloop train | predict | delta | patch` end to end on files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from edgeloop.cli.main import main
from tests.factories import digits_toml

CONFIG = digits_toml(threshold=0.93, min_improvement=0.005)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "digits.toml").write_text(CONFIG)
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    small, large = order[:180], order[180:1260]
    np.savez(tmp_path / "batch-000.npz", X=X[small], y=y[small])
    header = "label," + ",".join(f"p{i}" for i in range(64))
    rows = [",".join([str(y[i])] + [str(int(v)) for v in X[i]]) for i in large]
    (tmp_path / "batch-001.csv").write_text("\n".join([header, *rows]) + "\n")
    (tmp_path / "broken.csv").write_text(header + "\n1,2,three\n")
    return tmp_path


def test_train_refuses_ten_percent_then_promotes_with_more_data(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = workspace
    code = main(["train", str(w / "digits.toml"), str(w / "batch-000.npz"), "--out", str(w / "r1")])
    assert code == 3
    run = json.loads((w / "r1" / "run.json").read_text())
    assert run["gate"]["decision"] == "refused"
    # A refused candidate is not shipped, nor kept as a champion to warm-start from.
    assert not (w / "r1" / "model.tflite").exists()
    assert not (w / "r1" / "estimator.joblib").exists()

    code = main(
        [
            "train",
            str(w / "digits.toml"),
            str(w / "batch-000.npz"),
            str(w / "batch-001.csv"),
            str(w / "broken.csv"),
            "--out",
            str(w / "r2"),
            "--json",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["gate"]["decision"] == "promoted"
    assert printed["start"] == "cold start"
    assert [q["reason"] for q in printed["data"]["quarantined"]] == ["wrong_width"]
    assert printed == json.loads((w / "r2" / "run.json").read_text())


def test_train_with_no_usable_data_fails_clearly(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = workspace
    code = main(["train", str(w / "digits.toml"), str(w / "broken.csv"), "--out", str(w / "r")])
    assert code == 1
    assert "no usable data for model digits" in capsys.readouterr().err
    assert json.loads((w / "r" / "run.json").read_text())["status"] == "failed"


def test_bad_config_exits_with_the_key_named(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workspace / "bad.toml").write_text(CONFIG.replace("threshold", "treshold"))
    code = main(
        ["train", str(workspace / "bad.toml"), str(workspace / "batch-000.npz"), "--out", "x"]
    )
    assert code == 2
    assert "gate.treshold: unknown key" in capsys.readouterr().err


def test_predict_runs_through_the_edge_runtime(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = workspace
    main(["train", str(w / "digits.toml"), str(w / "batch-001.csv"), "--out", str(w / "r")])
    capsys.readouterr()
    assert main(["predict", str(w / "r" / "model.tflite"), str(w / "batch-000.npz"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 180
    assert summary["accuracy"] >= 0.9
    assert main(["predict", str(w / "r" / "model.tflite"), str(w / "batch-001.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 1080


@pytest.mark.parametrize("codec", ["bsdiff4", "zstd", "wdiff"])
def test_delta_then_patch_round_trips_and_refuses_the_wrong_base(
    workspace: Path, codec: str, capsys: pytest.CaptureFixture[str]
) -> None:
    w = workspace
    (w / "lenient.toml").write_text(digits_toml(threshold=0.5, min_improvement=0.0))
    main(["train", str(w / "lenient.toml"), str(w / "batch-000.npz"), "--out", str(w / "a")])
    main(["train", str(w / "lenient.toml"), str(w / "batch-001.csv"), "--out", str(w / "b")])
    old, new = w / "a" / "model.tflite", w / "b" / "model.tflite"
    assert main(["delta", str(old), str(new), "-o", str(w / "p"), "--codec", codec]) == 0
    assert main(["patch", str(old), str(w / "p"), "-o", str(w / "out.tflite")]) == 0
    assert (w / "out.tflite").read_bytes() == new.read_bytes()
    capsys.readouterr()
    assert main(["patch", str(new), str(w / "p"), "-o", str(w / "bad.tflite")]) == 1
    assert "PatchBaseMismatch" in capsys.readouterr().err
    assert not (w / "bad.tflite").exists()


def test_wdiff_between_models_of_another_layout_is_refused_with_the_way_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a").write_bytes(b"a" * 100)
    (tmp_path / "b").write_bytes(b"b" * 120)
    args = ["delta", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "p")]
    assert main([*args, "--codec", "wdiff"]) == 2
    assert "ship a bsdiff4 or zstd patch instead" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
