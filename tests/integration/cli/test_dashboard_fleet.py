"""The dashboard over moto's tables, as the functions write them: the JSON endpoint shows
each device, the champion, the versions, the runs and the rollout's progress by stage,
and a headless Chromium renders the page with the devices in it."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeloop.cli.dashboard import Dashboard, _reader
from edgeloop.cli.fleet import device_docs
from edgeloop.cli.main import build_parser
from edgeloop.contract import Health, StatusReport
from functions.common.fleet import DeviceRecord
from tests.support_aws import LocalCloud, report_status, start_test_rollout

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _presence(cloud: LocalCloud) -> str:
    """Lifecycle events as the presence rule writes them: pump-1 connected, pump-2 gone."""
    dynamodb = cloud.client("dynamodb")
    # One moto server serves the whole session: a table of this test's own.
    table = f"presence-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(
        TableName=table,
        KeySchema=[
            {"AttributeName": "thing", "KeyType": "HASH"},
            {"AttributeName": "event", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "thing", "AttributeType": "S"},
            {"AttributeName": "event", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for thing, event, at_ms in (
        ("pump-1", "connected", 1_790_000_000_000),
        ("pump-2", "connected", 1_790_000_000_000),
        ("pump-2", "disconnected", 1_790_000_060_000),
    ):
        dynamodb.put_item(
            TableName=table,
            Item={
                "thing": {"S": thing},
                "event": {"S": event},
                "at_ms": {"N": str(at_ms)},
                "version": {"N": "1"},
            },
        )
    return table


@pytest.fixture
def dashboard(cloud: LocalCloud) -> Iterator[Dashboard]:
    registry = start_test_rollout(cloud, version=2)
    registry.publish_version(
        "vibration",
        2,
        {"size": 9120, "compressed_full_size": 4410, "deltas": [{"from_version": 1, "size": 610}]},
    )
    registry.set_champion("vibration", 2, {})
    registry.record_run(
        "vibration",
        "run-1",
        {"at": "2026-12-06T10:00:00Z", "decision": "promoted", "rows": 1200, "version": 2},
    )
    # Three named canaries installed v2, one failed; pump-10 (a later stage) runs nothing.
    for thing in ("pump-1", "pump-2", "pump-3"):
        report_status(thing)
    report_status("pump-4", version=1, health="degraded", step="failed")
    report_status("pump-10", version=None, health="no_model", step="idle", target_version=None)
    presence = _presence(cloud)
    # As `edgeloop dashboard` reads a deployed stack's tables, named here by hand.
    args = build_parser().parse_args(
        [
            "dashboard",
            "--table",
            cloud.names["REGISTRY_TABLE"],
            "--fleet-table",
            cloud.names["FLEET_TABLE"],
            "--presence-table",
            presence,
            "--model",
            "vibration",
            "--model",
            "digits",
            "--endpoint-url",
            cloud.endpoint,
        ]
    )
    read, source = _reader(args)
    assert source == f"tables {cloud.names['REGISTRY_TABLE']}, {cloud.names['FLEET_TABLE']}"
    served = Dashboard(read, source, port=0)
    try:
        yield served
    finally:
        served.stop()


def test_the_json_endpoint_reads_the_fleet_the_functions_wrote(dashboard: Dashboard) -> None:
    with urllib.request.urlopen(dashboard.url + "api/fleet", timeout=30) as response:
        doc = json.load(response)
    vibration = doc["models"]["vibration"]
    devices = {d["thing"]: d for d in vibration["devices"]}
    assert set(devices) == {"pump-1", "pump-2", "pump-3", "pump-4", "pump-10"}
    assert (devices["pump-1"]["version"], devices["pump-1"]["presence"]) == (2, "connected")
    assert (devices["pump-2"]["presence"], devices["pump-10"]["presence"]) == ("offline", None)
    assert devices["pump-4"]["health"] == "degraded"
    assert devices["pump-1"]["model"] == "vibration"
    assert vibration["champion"] == 2
    assert vibration["versions"][0]["compressed_full_size"] == 4410
    assert vibration["runs"][0]["rows"] == 1200
    canaries = vibration["progress"][0]
    assert (canaries["name"], canaries["installed"]) == ("stage 0 (named canaries)", 3)
    assert canaries["status"] == vibration["rollout"]["state"] == "rolling"
    assert [p["status"] for p in vibration["progress"][1:]] == ["waiting"] * 4
    assert doc["models"]["digits"] == {
        "champion": None,
        "runs": [],
        "versions": [],
        "rollout": None,
        "progress": [],
        "devices": [],
    }


def _chromium(*args: str, profile: Path) -> str:
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH: `make system-deps` installs it (apt-get install chromium)",
)
def test_a_browser_renders_the_devices_and_the_script_refreshes_them(
    dashboard: Dashboard, tmp_path: Path
) -> None:
    # Long enough for the page's script to poll at least once (every 3 s, virtual time).
    dom = _chromium(
        "--virtual-time-budget=7000", "--dump-dom", dashboard.url, profile=tmp_path / "p1"
    )
    for thing in ("pump-1", "pump-2", "pump-3", "pump-4", "pump-10"):
        assert f"<td>{thing}</td>" in dom
    assert "stage 0 (named canaries)" in dom
    assert '<progress max="' in dom
    # The script ran (its policy hash matches) and swapped in a fresh rendering.
    assert 'data-refreshed="' in dom
    assert '<span id="note"></span>' in dom  # no "cannot refresh" said
    screenshot = tmp_path / "dashboard.png"
    _chromium(
        f"--screenshot={screenshot}",
        "--window-size=1280,900",
        "--hide-scrollbars",
        dashboard.url,
        profile=tmp_path / "p2",
    )
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 10_000


HOSTILE = '<img src=x onerror="document.title=1">'


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH: `make system-deps` installs it (apt-get install chromium)",
)
def test_a_browser_shows_a_hostile_thing_name_as_text_also_after_a_refresh(
    tmp_path: Path,
) -> None:
    record = DeviceRecord(
        HOSTILE, "2026-12-01T10:00:00Z", StatusReport("vibration", 1, Health.HEALTHY)
    )
    doc = {"models": {"vibration": {"champion": 1, "devices": device_docs([record], {})}}}
    served = Dashboard(lambda: doc, "a fleet with a hostile device", port=0)
    try:
        dom = _chromium(
            "--virtual-time-budget=7000", "--dump-dom", served.url, profile=tmp_path / "p"
        )
    finally:
        served.stop()
    assert 'data-refreshed="' in dom  # the script's rendering, not only the server's
    assert "<img" not in dom
    assert '&lt;img src=x onerror="document.title=1"&gt;' in dom
    assert "<title>edgeloop fleet</title>" in dom
