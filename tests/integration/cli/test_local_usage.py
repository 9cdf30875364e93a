"""`edgeloop local` and `edgeloop feed` mistakes end in one line that says what to do."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgeloop.cli.main import main

REPO = Path(__file__).resolve().parents[3]


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_local_up_names_a_missing_or_empty_model_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["local", "up", "--models", str(tmp_path / "nowhere")]) == 2
    assert "no such directory of model configs" in _one_line(capsys.readouterr().err)
    assert main(["local", "up", "--models", str(tmp_path)]) == 2
    assert "no model configs (*.toml) there" in _one_line(capsys.readouterr().err)


def test_local_up_asks_which_model_agent_toml_is_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("digits", "vibration"):
        (tmp_path / f"{name}.toml").write_text((REPO / "models" / f"{name}.toml").read_text())
    assert main(["local", "up", "--models", str(tmp_path)]) == 2
    assert "which one of digits, vibration" in _one_line(capsys.readouterr().err)
    assert main(["local", "up", "--models", str(tmp_path), "--model", "pumps"]) == 2
    assert "not one of digits, vibration" in _one_line(capsys.readouterr().err)


def test_local_up_names_the_bad_key_of_a_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (REPO / "models" / "vibration.toml").read_text().replace("threshold", "treshold")
    (tmp_path / "vibration.toml").write_text(text)
    assert main(["local", "up", "--models", str(tmp_path)]) == 2
    assert "gate.treshold: unknown key" in _one_line(capsys.readouterr().err)


def test_local_status_says_when_no_local_cloud_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["local", "status", "--dir", str(tmp_path)]) == 1
    assert "no local cloud is running" in _one_line(capsys.readouterr().err)
    # A state file left by a cloud that has gone.
    (tmp_path / "local.json").write_text(json.dumps({"pid": 2**22 + os.getpid()}))
    assert main(["local", "status", "--dir", str(tmp_path), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["code"] == "not_running"


def test_feed_picks_the_models_columns_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["rms", "peak", "crest", "kurtosis", "band_low", "band_mid", "band_high", "temp"]
    header = ["temp", "timestamp", *names[:-1]]
    (tmp_path / "log.csv").write_text(
        ",".join(header) + "\n" + "8,2026-01-01T00:00:00Z,1,2,3,4,5,6,17.99\n"
    )
    config = str(REPO / "models" / "vibration.toml")
    assert main(["feed", str(tmp_path / "log.csv"), "--config", config]) == 0
    # 17.99 as the shortest float32 decimal, not float32 noise (17.989999771118164).
    assert json.loads(capsys.readouterr().out) == {"x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 17.99, 8.0]}
    (tmp_path / "short.csv").write_text("rms,peak\n1,2\n")
    assert main(["feed", str(tmp_path / "short.csv"), "--config", config]) == 2
    assert "no column 'crest'" in _one_line(capsys.readouterr().err)
