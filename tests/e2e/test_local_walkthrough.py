"""The README walkthrough step by step: from your own CSV to a device running a model trained on it.

1. a sensor log of your own: a timestamp column and named feature columns;
2. `edgeloop local up --models models --thing pump-7 --out state`;
3. `edgeloop feed sensor.csv --config models/vibration.toml |
   edgeloop-agent run --config state/agent.toml`;
4. `edgeloop local status --dir state` until the device runs v1;
5. `edgeloop predict` with the model the device received;
6. Ctrl-C stops the local cloud.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.sources import synthetic_vibration

REPO = Path(__file__).resolve().parents[2]
NAMES = ["rms", "peak", "crest", "kurtosis", "band_low", "band_mid", "band_high", "temp"]
TIMEOUT = 90.0


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def _edgeloop(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeloop.cli.main", *args]


def _wait_for(what: str, check: Any, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _status(state: Path) -> dict[str, Any]:
    done = subprocess.run(
        _edgeloop("local", "status", "--dir", str(state), "--json"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Step 1: a sensor log with a timestamp and named columns, in an order of its own."""
    (tmp_path / "models").mkdir()
    shutil.copy(REPO / "models" / "vibration.toml", tmp_path / "models" / "vibration.toml")
    order = list(reversed(NAMES))
    lines = ["timestamp," + ",".join(order)]
    for i, sample in enumerate(synthetic_vibration(8, 0.01, seed=3, count=3000)):
        values = dict(zip(NAMES, sample.x.tolist(), strict=True))
        lines.append(f"2026-01-01T00:00:{i:05d}Z," + ",".join(f"{values[n]:.4f}" for n in order))
    (tmp_path / "sensor.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


@pytest.fixture
def local_cloud(workdir: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """Step 2: the local cloud, started the way the README says."""
    up = subprocess.Popen(
        _edgeloop(
            "local",
            "up",
            "--models",
            str(workdir / "models"),
            "--thing",
            "pump-7",
            "--out",
            str(workdir / "state"),
            # The default port may be a running local cloud's of the developer's own.
            "--dashboard-port",
            str(_free_port()),
            "--json",
        ),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert up.stdout is not None
        first = up.stdout.readline()  # blocks until it is up (or has died: then it is "")
        assert first, up.stderr.read() if up.stderr else ""
        yield up, json.loads(first)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)


@pytest.mark.slow
def test_your_csv_to_your_device_running_a_model_trained_on_it(
    workdir: Path, local_cloud: tuple[subprocess.Popen[str], dict[str, Any]]
) -> None:
    up, info = local_cloud
    state = workdir / "state"
    assert info["agent_config"] == str(state / "agent.toml")
    # The device's trust anchor: the local cloud's root metadata, as `edgeloop trust init`
    # writes a fleet's.
    assert json.loads((state / "root.json").read_text())["signed"]["_type"] == "root"
    assert _status(state)["models"]["vibration"]["champion"] is None

    # Step 3: the device, fed from the CSV by column name.
    feed = subprocess.Popen(
        _edgeloop(
            "feed",
            str(workdir / "sensor.csv"),
            "--config",
            str(workdir / "models" / "vibration.toml"),
        ),
        env=_env(),
        stdout=subprocess.PIPE,
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(state / "agent.toml")],
        env=_env(),
        stdin=feed.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Step 4: the cloud trains on what the device uploaded and the device swaps it in.
        def device_on_a_model() -> dict[str, Any] | None:
            doc = _status(state)["models"]["vibration"]
            devices = [d for d in doc["devices"] if d["thing"] == "pump-7" and d["version"]]
            return doc if devices and doc["champion"] else None

        doc = _wait_for("pump-7 to run a model trained on its uploads", device_on_a_model)
        [run] = [r for r in doc["runs"] if r.get("version") == doc["champion"]]
        assert run["decision"] == "promoted"
        assert run["rows"] >= 1000  # trained on the CSV's rows, uploaded by the device
        [device] = doc["devices"]
        assert device["version"] == doc["champion"]
        assert device["health"] == "healthy"
        status = subprocess.run(
            _edgeloop("local", "status", "--dir", str(state)),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "pump-7" in status.stdout
        assert "promoted" in status.stdout
        # The dashboard `local up` serves shows the same device and run.
        with urllib.request.urlopen(info["dashboard_url"] + "api/fleet", timeout=30) as page:
            shown = json.load(page)["models"]["vibration"]
        assert [d["thing"] for d in shown["devices"]] == ["pump-7"]
        assert shown["champion"] == doc["champion"]

        # Step 5: the model the device received (kept in its state directory beside the
        # manifest it assembled from the verified metadata), scored on the CSV by column name.
        received = state / "devices" / "pump-7" / "models" / "versions" / str(doc["champion"])
        assert (received / "model.tflite").is_file()
        scored = subprocess.run(
            _edgeloop("predict", str(received), str(workdir / "sensor.csv"), "--json"),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        summary = json.loads(scored.stdout)
        assert summary["rows"] == 3000
        assert summary["columns"] == NAMES
        assert 0 < summary["alarms"] < 300  # about 1% planted anomalies
        assert "INFO: Created TensorFlow Lite" not in scored.stderr
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
        feed.kill()
        feed.wait(10)

    # Step 6: Ctrl-C stops the local cloud cleanly and says so.
    up.send_signal(signal.SIGINT)
    assert up.wait(30) == 130
    said = up.stderr.read() if up.stderr else ""
    assert "stopped" in said
    # Library chatter stays out of the way: no Powertools warnings, no interpreter INFO line.
    assert "Warning" not in said
    assert "INFO: Created TensorFlow Lite" not in said
    assert not (state / "local.json").exists()
    gone = subprocess.run(
        _edgeloop("local", "status", "--dir", str(state)),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gone.returncode == 1
    assert "no local cloud is running" in gone.stderr
