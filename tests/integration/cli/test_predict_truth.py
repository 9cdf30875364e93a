"""`edgeloop predict` answers in the model's terms: its class labels, its columns, its alarms."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from edgeloop.cli.main import main

FEATURES = [f"p{i}" for i in range(64)]
LABELLED_TOML = f"""
[model]
name = "tri"
kind = "mlp_classifier"
n_features = 64
classes = [10, 20, 30]
label_column = "digit_class"
feature_names = {json.dumps(FEATURES)}

[gate]
metric = "accuracy"
threshold = 0.5
"""

VIBRATION_NAMES = ["rms", "peak", "crest", "kurtosis", "band_low", "band_mid", "band_high", "temp"]
VIBRATION_TOML = f"""
[model]
name = "vibration"
kind = "kmeans_anomaly"
n_features = 8
feature_names = {json.dumps(VIBRATION_NAMES)}

[train]
params = {{ n_clusters = 4, threshold_method = "mad", mad_k = 5.0 }}

[gate]
metric = "silhouette"
threshold = 0.3
"""


def _write_csv(path: Path, header: list[str], rows: Sequence[Sequence[object]]) -> None:
    path.write_text("\n".join([",".join(header), *(",".join(map(str, r)) for r in rows)]) + "\n")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classifier whose classes are 10, 20 and 30, trained from a CSV with a timestamp."""
    w = tmp_path_factory.mktemp("predict")
    X, y = load_digits(return_X_y=True)
    keep = y < 3
    X, y = X[keep], (y[keep] + 1) * 10
    (w / "tri.toml").write_text(LABELLED_TOML)
    header = ["timestamp", "digit_class", *FEATURES]
    rows = [[1_700_000_000 + i, int(y[i]), *(int(v) for v in X[i])] for i in range(len(X))]
    _write_csv(w / "train.csv", header, rows)
    # The same rows with the columns in another order, and the label last.
    reordered = ["digit_class", *reversed(FEATURES), "timestamp"]
    order = [header.index(c) for c in reordered]
    _write_csv(w / "reordered.csv", reordered, [[r[i] for i in order] for r in rows])
    assert main(["train", str(w / "tri.toml"), str(w / "train.csv"), "--out", str(w / "run")]) == 0
    return w


def _predict(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["predict", *args, "--json"]) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def test_predict_prints_the_models_class_labels_and_scores_accuracy_against_them(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = _predict([str(trained / "run" / "model.tflite"), str(trained / "train.csv")], capsys)
    assert set(doc["predicted"]) == {10, 20, 30}
    assert doc["accuracy"] > 0.9
    main(["predict", str(trained / "run"), str(trained / "train.csv")])
    printed = capsys.readouterr().out
    assert "accuracy against the file's 'digit_class' column" in printed


def test_predict_takes_class_labels_from_the_command_line_when_the_model_stands_alone(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alone = tmp_path / "model.tflite"
    alone.write_bytes((trained / "run" / "model.tflite").read_bytes())
    csv = str(trained / "train.csv")
    doc = _predict(
        [str(alone), csv, "--classes", "10,20,30", "--config", str(trained / "tri.toml")], capsys
    )
    assert doc["accuracy"] > 0.9
    assert main(["predict", str(alone), csv]) == 2  # no names: the timestamp cannot be told apart
    assert "model.feature_names" in capsys.readouterr().err


def test_predict_matches_columns_by_name_whatever_their_order(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(trained / "run" / "model.tflite")
    straight = _predict([model, str(trained / "train.csv")], capsys)
    reordered = _predict([model, str(trained / "reordered.csv")], capsys)
    assert reordered["predicted"] == straight["predicted"]
    assert reordered["accuracy"] == straight["accuracy"]


def test_predict_names_a_missing_column(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_csv(tmp_path / "short.csv", ["digit_class", *FEATURES[:-1]], [[10, *([0] * 63)]])
    code = main(["predict", str(trained / "run"), str(tmp_path / "short.csv")])
    assert code == 2
    err = capsys.readouterr().err
    assert "no column 'p63'" in err
    assert len(err.strip().splitlines()) == 1


def test_an_empty_csv_is_a_one_line_error(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("digit_class," + ",".join(FEATURES) + "\n")
    for name, says in (("empty.csv", "is empty"), ("header.csv", "has a header but no rows")):
        assert main(["predict", str(trained / "run"), str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert says in err
        assert len(err.strip().splitlines()) == 1


def test_the_label_column_flag_overrides_the_models(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (trained / "train.csv").read_text().replace("digit_class", "truth", 1)
    (tmp_path / "renamed.csv").write_text(text)
    model = str(trained / "run")
    assert "accuracy" not in _predict([model, str(tmp_path / "renamed.csv")], capsys)
    main(["predict", model, str(tmp_path / "renamed.csv")])
    assert "no accuracy: the file has no 'digit_class' column" in capsys.readouterr().out
    doc = _predict([model, str(tmp_path / "renamed.csv"), "--label-column", "truth"], capsys)
    assert doc["accuracy"] > 0.9


def test_predict_flags_which_rows_of_a_kmeans_model_are_alarms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.sources import synthetic_vibration

    samples = list(synthetic_vibration(8, 0.0, seed=1, count=1500))
    (tmp_path / "vibration.toml").write_text(VIBRATION_TOML)
    _write_csv(
        tmp_path / "normal.csv",
        ["timestamp", *VIBRATION_NAMES],
        [[i, *(float(v) for v in s.x)] for i, s in enumerate(samples)],
    )
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(tmp_path / "vibration.toml"),
                str(tmp_path / "normal.csv"),
                "--out",
                str(run),
            ]
        )
        == 0
    )
    planted = np.full(8, 200.0)
    rows = [[i, *(float(v) for v in s.x)] for i, s in enumerate(samples[:5])]
    rows.insert(2, [99, *planted.tolist()])
    _write_csv(tmp_path / "check.csv", ["timestamp", *VIBRATION_NAMES], rows)
    doc = _predict([str(run), str(tmp_path / "check.csv")], capsys)
    threshold = json.loads((run / "run.json").read_text())["decision_threshold"]
    assert doc["threshold"] == threshold
    assert doc["alarm_lines"] == [4]  # the header is line 1; the planted row is the third
    assert doc["alarm"] == [False, False, True, False, False, False]
    main(["predict", str(run), str(tmp_path / "check.csv")])
    assert "1 of 6 rows are alarms" in capsys.readouterr().out


def _one_line_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["predict", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_label_column_the_file_lacks_is_refused_not_ignored(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _one_line_error(
        [str(trained / "run"), str(trained / "train.csv"), "--label-column", "truth"], capsys
    )
    assert "no column 'truth' for the labels" in err


def test_labels_the_classifier_cannot_output_are_refused_not_scored_zero(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (trained / "train.csv").read_text().splitlines()
    header, first = lines[0], lines[1].split(",")
    first[1] = "cat"
    (tmp_path / "named.csv").write_text("\n".join([header, ",".join(first), *lines[2:5]]) + "\n")
    err = _one_line_error([str(trained / "run"), str(tmp_path / "named.csv")], capsys)
    assert "holds 'cat'" in err
    assert "its classes: 10, 20, 30" in err


def test_predict_reports_the_bytes_it_read(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = trained / "train.csv"
    doc = _predict([str(trained / "run"), str(data)], capsys)
    assert doc["bytes_read"] == data.stat().st_size
    main(["predict", str(trained / "run"), str(data)])
    assert f"({data.stat().st_size:,} bytes read)" in capsys.readouterr().out


@pytest.fixture(scope="module")
def vibration(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[float]]]:
    from edge.sources import synthetic_vibration

    w = tmp_path_factory.mktemp("vibration")
    samples = list(synthetic_vibration(8, 0.0, seed=1, count=1500))
    rows = [[float(v) for v in s.x] for s in samples]
    (w / "vibration.toml").write_text(VIBRATION_TOML)
    _write_csv(w / "normal.csv", VIBRATION_NAMES, rows)
    args = ["train", str(w / "vibration.toml"), str(w / "normal.csv"), "--out", str(w / "run")]
    assert main(args) == 0
    return w, rows


def test_an_anomaly_model_reports_auc_and_detection_rate_against_the_files_labels(
    vibration: tuple[Path, list[list[float]]], capsys: pytest.CaptureFixture[str]
) -> None:
    w, rows = vibration
    rng = np.random.default_rng(3)
    normal = [[*r, 0] for r in rows[:40]]
    planted = [[*(rng.uniform(150, 250, 8)).tolist(), 1] for _ in range(10)]
    _write_csv(w / "labelled.csv", [*VIBRATION_NAMES, "label"], normal + planted)
    doc = _predict([str(w / "run"), str(w / "labelled.csv")], capsys)
    assert doc["anomalies"] == 10
    assert doc["auc"] == 1.0
    assert doc["detection_rate"] == 1.0
    assert doc["false_alarm_rate"] <= 0.1
    main(["predict", str(w / "run"), str(w / "labelled.csv")])
    out = capsys.readouterr().out
    assert "AUC against the file's 'label' column (10 anomalies): 1.0000" in out
    assert "detection rate: 1.0000" in out


def test_an_anomaly_models_labels_must_be_zero_or_one(
    vibration: tuple[Path, list[list[float]]], capsys: pytest.CaptureFixture[str]
) -> None:
    w, rows = vibration
    _write_csv(w / "worded.csv", [*VIBRATION_NAMES, "label"], [[*rows[0], "broken"]])
    err = _one_line_error([str(w / "run"), str(w / "worded.csv")], capsys)
    assert "holds 'broken'" in err
    assert "1 (anomaly) and 0 (normal)" in err


def test_config_keeps_the_versions_threshold_from_a_release_manifest(
    vibration: tuple[Path, list[list[float]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w, rows = vibration
    release = tmp_path / "release"
    release.mkdir()
    (release / "model.tflite").write_bytes((w / "run" / "model.tflite").read_bytes())
    threshold = json.loads((w / "run" / "run.json").read_text())["decision_threshold"]
    (release / "manifest.json").write_text(
        json.dumps({"decision_threshold": threshold, "output": {"shape": [-1]}})
    )
    _write_csv(tmp_path / "few.csv", VIBRATION_NAMES, rows[:5])
    doc = _predict(
        [str(release), str(tmp_path / "few.csv"), "--config", str(w / "vibration.toml")], capsys
    )
    assert doc["threshold"] == threshold
    assert "manifest.json" in doc["described_by"]
