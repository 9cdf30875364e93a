"""The demo, reduced to three devices, end to end for both scenarios."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edgeloop.demo.run import DemoOptions, run_demo

# The stated floor for on-board anomaly detection against the planted truth.
DETECTION_FLOOR = {"recall": 0.8, "precision": 0.8}


@pytest.fixture(scope="module", params=["digits", "anomaly"])
def report(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp(request.param)
    run_demo(DemoOptions(scenario=request.param, devices=3, out=out))
    doc: dict[str, Any] = json.loads((out / "report.json").read_text())
    return doc, out


def test_every_device_ends_on_the_final_version(report: tuple[dict[str, Any], Path]) -> None:
    doc, _ = report
    assert doc["final_version"] is not None
    assert {d["final_version"] for d in doc["devices"].values()} == {doc["final_version"]}
    assert doc["router_errors"] == []


def test_the_first_small_round_is_refused_by_the_gate(report: tuple[dict[str, Any], Path]) -> None:
    doc, _ = report
    first = doc["rounds"][0]["runs"]
    assert first
    assert all(run["decision"] == "refused" for run in first)


def test_any_patch_shipped_was_smaller_than_its_full_artifact(
    report: tuple[dict[str, Any], Path],
) -> None:
    doc, _ = report
    full = {int(k): v for k, v in doc["full_artifact_bytes"].items()}
    for shipment in doc["shipments"]:
        if shipment["kind"] == "patch":
            assert shipment["bytes"] < full[shipment["version"]]


def test_uploads_per_device_fell_after_the_swap(report: tuple[dict[str, Any], Path]) -> None:
    doc, _ = report
    for device in doc["devices"].values():
        assert device["upload_share_before_swap"] == 1.0
        assert device["samples_with_model"] > 0
        assert device["upload_share_after_swap"] < 0.5


def test_quality_clears_the_gate_or_the_stated_floor(report: tuple[dict[str, Any], Path]) -> None:
    doc, _ = report
    if doc["scenario"] == "digits":
        assert doc["quality"]["deployed_accuracy"] >= doc["gate"]["threshold"]
    else:
        for key, floor in DETECTION_FLOOR.items():
            assert doc["quality"][key] >= floor, doc["quality"]


def test_the_report_is_written_for_people_too(report: tuple[dict[str, Any], Path]) -> None:
    doc, out = report
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "report.md").read_text()
    assert f"final model version: v{doc['final_version']}" in markdown
    assert "![report](report.png)" in markdown


def test_ctrl_c_stops_the_demo_cleanly(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgeloop.cli.main",
            "demo",
            "--no-live",
            "--devices",
            "2",
            "--out",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    seen = ""
    while time.monotonic() < deadline and "devices connected" not in seen:
        seen = process.stdout.readline()
    assert "devices connected" in seen
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert code == 130
    assert "stopped" in (process.stderr.read() if process.stderr else "")
    assert not (tmp_path / "report.json").exists()
