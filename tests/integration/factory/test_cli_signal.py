"""`edgeloop train` on raw windows: a config with a signal pipeline, files of windows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeloop.cli.main import main
from edgeloop.factory.config import load_config
from edgeloop.runtime import CompiledModel
from tests.factories import signal_doc, signal_windows

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "docs" / "examples" / "pump-signal.toml"


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(i) for i in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(i)}" for k, i in v.items()) + " }"
    return repr(v)


def _toml(doc: dict[str, dict[str, object]]) -> str:
    return "".join(
        f"[{section}]\n" + "".join(f"{k} = {_value(v)}\n" for k, v in body.items())
        for section, body in doc.items()
    )


def test_train_from_raw_windows_ships_a_graph_that_takes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pump.toml").write_text(_toml(signal_doc()))
    X, modes = signal_windows(900, seed=5, outlier_share=0.03)
    np.savez(tmp_path / "windows.npz", X=X)
    code = main(
        ["train", str(tmp_path / "pump.toml"), str(tmp_path / "windows.npz"), "--out",
         str(tmp_path / "run")]
    )  # fmt: skip
    assert code == 0, capsys.readouterr()
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["gate"]["decision"] == "promoted"
    features = run["export"]["check"]["features"]
    assert features["ok"]
    assert features["max_relative_error"] <= 1e-4
    model = CompiledModel((tmp_path / "run" / "model.tflite").read_bytes())
    assert model.n_features == X.shape[1]
    scores = model.predict(X)
    threshold = run["decision_threshold"]
    assert (scores[modes == -1] > threshold).mean() >= 0.9


def test_train_names_the_window_layout_when_no_file_fits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pump.toml").write_text(_toml(signal_doc()))
    np.savez(tmp_path / "features.npz", X=np.zeros((50, 24)))
    code = main(
        ["train", str(tmp_path / "pump.toml"), str(tmp_path / "features.npz"), "--out",
         str(tmp_path / "run")]
    )  # fmt: skip
    assert code != 0
    err = capsys.readouterr().err
    assert "rows of raw windows, 128 samples x 3 channels (384 values, sample-major" in err


def test_the_example_config_trains_from_raw_windows(tmp_path: Path) -> None:
    config = load_config(EXAMPLE)
    assert config.signal is not None
    assert config.input_width == 256 * 3
    rng = np.random.default_rng(6)
    t = np.arange(config.signal.window) / config.signal.sample_rate
    rows = []
    for mode in rng.integers(0, 4, 600):
        freq = (20.0, 60.0, 120.0, 300.0)[mode] * rng.uniform(0.98, 1.02)
        amp = (1.0, 2.0, 0.5, 3.0)[mode]
        x = amp * np.sin(2 * np.pi * freq * t[:, None] + rng.uniform(0, 6, 3))
        x = x * np.array([1.0, 0.6, 0.3]) + rng.normal(0.0, 0.1 * amp, x.shape)
        x[:, 2] += 9.81
        rows.append(x.reshape(-1))
    np.savez(tmp_path / "windows.npz", X=np.array(rows))
    shutil.copy(EXAMPLE, tmp_path / "pump.toml")
    code = main(
        ["train", str(tmp_path / "pump.toml"), str(tmp_path / "windows.npz"), "--out",
         str(tmp_path / "run")]
    )  # fmt: skip
    assert code == 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["export"]["check"]["features"]["ok"]
