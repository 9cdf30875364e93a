"""`edgeloop train` says what went wrong, in one line, and never ships what it refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from edgeloop.cli.main import main
from tests.factories import digits_toml

VIBRATION_TOML = """
[model]
name = "vibration"
kind = "kmeans_anomaly"
n_features = 8
[train]
params = { n_clusters = 4 }
[gate]
metric = "silhouette"
threshold = 0.3
"""


@pytest.fixture
def w(tmp_path: Path) -> Path:
    (tmp_path / "digits.toml").write_text(digits_toml(threshold=0.9, min_improvement=0.0))
    (tmp_path / "strict.toml").write_text(digits_toml(threshold=0.999, min_improvement=0.0))
    (tmp_path / "vibration.toml").write_text(VIBRATION_TOML)
    X, y = load_digits(return_X_y=True)
    np.savez(tmp_path / "digits.npz", X=X[:900], y=y[:900])
    return tmp_path


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_a_champion_that_is_a_file_is_a_one_line_error(
    w: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (w / "champion.tflite").write_bytes(b"x")
    for champion, says in (("champion.tflite", "not a file"), ("nowhere", "no estimator.joblib")):
        args = ["train", str(w / "digits.toml"), str(w / "digits.npz"), "--out", str(w / "r")]
        assert main([*args, "--champion", str(w / champion)]) == 2
        line = _one_line(capsys.readouterr().err)
        assert says in line
        assert "Errno" not in line


def test_a_champion_of_another_kind_is_refused_with_the_reason(
    w: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.sources import synthetic_vibration

    X = np.stack([s.x for s in synthetic_vibration(8, 0.0, seed=0, count=600)])
    np.savez(w / "vibration.npz", X=X)
    assert (
        main(["train", str(w / "vibration.toml"), str(w / "vibration.npz"), "--out", str(w / "k")])
        == 0
    )
    capsys.readouterr()
    args = ["train", str(w / "digits.toml"), str(w / "digits.npz"), "--out", str(w / "r")]
    assert main([*args, "--champion", str(w / "k")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "is a model of 'vibration', not 'digits'" in line
    (w / "k" / "run.json").unlink()  # without the record, the estimator itself still tells
    assert main([*args, "--champion", str(w / "k")]) == 2
    assert "kmeans_anomaly on 8 features" in _one_line(capsys.readouterr().err)


def test_a_misspelt_data_path_fails_the_run(w: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", str(w / "digits.toml"), str(w / "digits.npz"), str(w / "digts.npz")]
    assert main([*args, "--out", str(w / "r")]) == 1
    assert "no such data file" in _one_line(capsys.readouterr().err)
    assert not (w / "r" / "model.tflite").exists()


def test_a_refused_run_writes_its_record_but_no_model(
    w: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = w / "r"
    out.mkdir()
    (out / "model.tflite").write_bytes(b"an earlier run's model")
    assert main(["train", str(w / "strict.toml"), str(w / "digits.npz"), "--out", str(out)]) == 3
    assert json.loads((out / "run.json").read_text())["gate"]["decision"] == "refused"
    assert not (out / "model.tflite").exists()
    assert not (out / "estimator.joblib").exists()
    assert "no model.tflite" in capsys.readouterr().out


def test_json_prints_an_object_on_failure_too(w: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (w / "broken.csv").write_text("label,a\n1,2\n")
    cases = [
        (["train", str(w / "digits.toml"), str(w / "broken.csv")], "no_usable_data", 1),
        (["train", str(w / "digits.toml"), str(w / "missing.npz")], "missing_data", 1),
        (["train", str(w / "digits.toml"), str(w)], "missing_data", 1),
        (["train", str(w / "nothing.toml"), str(w / "digits.npz")], "bad_config", 2),
    ]
    for args, code, exit_code in cases:
        assert main([*args, "--out", str(w / "r"), "--json"]) == exit_code
        doc = json.loads(_one_line(capsys.readouterr().out))
        assert doc["code"] == code
        assert doc["error"]


def test_string_class_labels_are_refused_with_the_way_out(
    w: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    header = "label," + ",".join(f"p{i}" for i in range(64))
    (w / "named.csv").write_text(
        header + "\n" + "\n".join("cat," + ",".join(["1"] * 64) for _ in range(30)) + "\n"
    )
    assert main(["train", str(w / "digits.toml"), str(w / "named.csv"), "--out", str(w / "r")]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "'cat'" in line
    assert "whole-number class labels" in line


def test_no_message_tells_a_local_user_to_upload_batches(
    w: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (w / "broken.csv").write_text("label,a\n1,2\n")
    assert (
        main(["train", str(w / "digits.toml"), str(w / "broken.csv"), "--out", str(w / "r")]) == 1
    )
    err = capsys.readouterr().err.lower()
    assert "no usable data for model digits" in err
    assert "upload" not in err
    assert "64 features and a 'label' column" in err


def test_training_into_the_champions_own_directory_is_refused(
    w: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (w / "lenient.toml").write_text(digits_toml(threshold=0.5, min_improvement=0.0))
    assert (
        main(["train", str(w / "lenient.toml"), str(w / "digits.npz"), "--out", str(w / "c")]) == 0
    )
    capsys.readouterr()
    args = ["train", str(w / "strict.toml"), str(w / "digits.npz"), "--out", str(w / "c")]
    assert main([*args, "--champion", str(w / "c")]) == 2
    assert "another directory than --champion" in _one_line(capsys.readouterr().err)
    assert (w / "c" / "estimator.joblib").exists()


def test_a_declared_class_the_data_never_shows_is_warned_of(
    w: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    X, y = load_digits(return_X_y=True)
    keep = y != 9  # the config declares 0-9; nothing of class 9 arrives
    np.savez(w / "no-nines.npz", X=X[keep][:900], y=y[keep][:900])
    args = ["train", str(w / "digits.toml"), str(w / "no-nines.npz"), "--out", str(w / "r")]
    capsys.readouterr()
    main(args)
    assert "warning: no training row of class 9" in capsys.readouterr().out
    assert json.loads((w / "r" / "run.json").read_text())["unseen_classes"] == [9]
    # Every class present: no warning.
    main(["train", str(w / "digits.toml"), str(w / "digits.npz"), "--out", str(w / "all")])
    assert "no training row" not in capsys.readouterr().out
