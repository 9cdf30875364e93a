"""The dashboard serves the fleet as JSON and as escaped HTML, on loopback only, and says
so on the page when the tables cannot be read."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeloop.cli.dashboard import CSP, Dashboard, _reader, public_doc, render_fleet, start
from edgeloop.cli.errors import CliError
from edgeloop.cli.fleet import device_docs, rollout_progress
from edgeloop.cli.main import build_parser, main
from edgeloop.contract import Health, StatusReport
from functions.common.fleet import DeviceRecord
from functions.common.presence import Presence

HOSTILE = '<img src=x onerror="alert(1)">&<script>alert(2)</script>'


def fleet_doc(thing: str = "pump-1") -> dict[str, Any]:
    """What `local_status` returns, for two devices, one of them offline."""
    records = [
        DeviceRecord(thing, "2026-12-01T10:00:00Z", StatusReport("vibration", 2, Health.HEALTHY)),
        DeviceRecord("pump-2", "2026-12-01T10:01:00Z", StatusReport("vibration", 1, Health.FAILED)),
    ]
    presence = {"pump-2": Presence("pump-2", False, "2026-12-01T11:00:00Z", "KEEP_ALIVE")}
    return {
        "local_cloud": {"pid": 1, "credentials": {"aws_secret_access_key": "SECRET"}},
        "models": {
            "vibration": {
                "champion": 2,
                "runs": [{"at": "t", "decision": "promoted", "rows": 300, "version": 2}],
                "versions": [{"version": 2, "size": 9000, "deltas": [{"from_version": 1}]}],
                "rollout": {"version": 2, "state": "rolling", "stage": 1, "reason": HOSTILE},
                "progress": [],
                "devices": device_docs(records, presence),
            }
        },
    }


@pytest.fixture
def served() -> Iterator[Dashboard]:
    doc = fleet_doc(HOSTILE)
    dashboard = Dashboard(lambda: doc, "local cloud in /tmp/x", port=0)
    try:
        yield dashboard
    finally:
        dashboard.stop()


def get(
    dashboard: Dashboard, path: str, host: str = "127.0.0.1"
) -> tuple[int, dict[str, str], str]:
    connection = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": f"{host}:{dashboard.port}"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


def test_the_json_endpoint_serves_every_model_and_device_and_no_credentials(
    served: Dashboard,
) -> None:
    status, headers, body = get(served, "/api/fleet")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    devices = {d["thing"]: d for d in doc["models"]["vibration"]["devices"]}
    assert set(devices) == {HOSTILE, "pump-2"}
    assert (devices["pump-2"]["presence"], devices["pump-2"]["health"]) == ("offline", "failed")
    assert doc["models"]["vibration"]["champion"] == 2
    assert doc["source"] == "local cloud in /tmp/x"
    # The local cloud's key is the platform team's: never on a page.
    assert "SECRET" not in body
    assert "credentials" not in doc["local_cloud"]


def test_hostile_thing_names_and_reasons_are_escaped(served: Dashboard) -> None:
    for path in ("/", "/fleet.html"):
        status, headers, body = get(served, path)
        assert status == 200
        assert headers["Content-Security-Policy"] == CSP
        assert "<img" not in body
        assert "alert(2)</script>" not in body
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;&lt;script&gt;" in body
    # The page's own script is the only one, and the only one its policy allows.
    _, _, page = get(served, "/")
    assert page.count("<script>") == 1
    assert "script-src 'sha256-" in CSP
    assert "unsafe-inline" not in CSP.split("script-src")[1]


def test_a_page_asked_for_under_another_host_name_is_refused(served: Dashboard) -> None:
    # A site that rebinds its own name to 127.0.0.1 must not read the fleet.
    status, _, body = get(served, "/api/fleet", host="attacker.example")
    assert status == 421
    assert "pump-2" not in body
    assert get(served, "/api/fleet", host="localhost")[0] == 200
    assert get(served, "/nothing-here")[0] == 404


def test_the_page_says_when_the_fleet_cannot_be_read() -> None:
    def gone() -> dict[str, Any]:
        raise CliError("no local cloud is running for /tmp/x <b>")

    dashboard = Dashboard(gone, "local cloud in /tmp/x", port=0)
    try:
        status, _, body = get(dashboard, "/")
        assert status == 503
        assert "cannot read the fleet: no local cloud is running for /tmp/x &lt;b&gt;" in body
        # The page still carries its script: it keeps polling until the cloud is back.
        assert "setInterval" in body
        status, _, body = get(dashboard, "/api/fleet")
        assert (status, json.loads(body)["error"][:20]) == (503, "no local cloud is ru")
    finally:
        dashboard.stop()


def test_port_zero_is_no_dashboard_and_a_taken_port_only_warns(
    served: Dashboard, capsys: pytest.CaptureFixture[str]
) -> None:
    assert start(lambda: {}, "x", 0) is None
    assert start(lambda: {}, "x", served.port) is None
    said = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{served.port}" in said
    assert "pass --dashboard-port N" in said


def test_edgeloop_dashboard_on_a_taken_port_is_one_line_naming_its_own_option(
    served: Dashboard,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        "edgeloop.cli.dashboard._reader", lambda args: ((lambda: {}), "local cloud in x")
    )
    assert main(["dashboard", "--local", str(tmp_path), "--port", str(served.port)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"cannot listen on 127.0.0.1:{served.port}" in err
    assert "pass --port N" in err
    assert "--dashboard-port" not in err


class _Counts:
    """A registry that counts two installs and a failure in every stage it is asked about."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def stage_counts(self, model: str, version: int, stage: int) -> dict[str, int]:
        self.asked.append(stage)
        return {"installed": 2, "failed": 1}


def test_rollout_progress_names_each_stage_and_reads_only_those_reached() -> None:
    registry = _Counts()
    rollout = {"version": 3, "state": "paused", "stage": 2, "stages": [1, 10, 100], "needed": 5}
    progress = rollout_progress(registry, "vibration", rollout)  # type: ignore[arg-type]
    assert [(p["name"], p["status"], p["needed"]) for p in progress] == [
        ("stage 0 (named canaries)", "passed", None),
        ("stage 1 (1%)", "passed", None),
        ("stage 2 (10%)", "paused", 5),
        ("stage 3 (100%)", "waiting", None),
    ]
    assert registry.asked == [0, 1, 2]
    assert progress[3]["installed"] == 0
    html = render_fleet(
        {
            "source": "s",
            "read_at": "t",
            "models": {
                "vibration": {
                    "champion": 3,
                    "rollout": rollout,
                    "progress": progress,
                    "devices": [],
                }
            },
        }
    )
    assert '<progress max="5" value="2"></progress> 2 (needs 5)' in html


def test_the_command_says_what_it_needs(tmp_path: Path) -> None:
    # A stack keeps no list of its models: without --local, they are named.
    assert main(["dashboard", "--stack", "edgeloop", "--port", "0"]) == 2
    # A local cloud that is not running is said on the page, which waits for it.
    args = build_parser().parse_args(["dashboard", "--local", str(tmp_path)])
    read, source = _reader(args)
    assert source == f"local cloud in {tmp_path.resolve()}"
    with pytest.raises(CliError, match="no local cloud is running"):
        read()


def test_runs_show_their_gate_figure_and_a_chart_of_it_over_time() -> None:
    doc = fleet_doc()
    doc["models"]["vibration"]["runs"] = [
        {
            "at": "2026-12-01T10:05:00Z",
            "decision": "promoted",
            "judged": 0.71,
            "rows": 900,
            "metrics": {"silhouette": 0.71},
        },
        {
            "at": "2026-12-01T10:03:00Z",
            "decision": "refused",
            "judged": 0.52,
            "rows": 600,
            "metrics": {"silhouette": 0.52},
        },
        {
            "at": "2026-12-01T10:01:00Z",
            "decision": "promoted",
            "judged": 0.64,
            "rows": 300,
            "metrics": {"silhouette": 0.64},
        },
    ]
    page = render_fleet(public_doc(doc, "local cloud in /tmp/x"))
    assert "<th>gate figure</th>" in page
    assert '<td class="num">0.7100</td>' in page
    chart = page[page.index('<div class="chart">') :]
    assert chart.index("<svg") < chart.index("</svg>")
    # Drawn by matplotlib: its paths, no script; the page's policy allows one script only.
    assert "<script" not in chart[: chart.index("</svg>")]
    # One run judged is a figure, not a trend: no chart.
    doc["models"]["vibration"]["runs"] = doc["models"]["vibration"]["runs"][:1]
    assert "<svg" not in render_fleet(public_doc(doc, "local cloud in /tmp/x"))


def test_the_chart_marks_shipped_and_refused_runs_oldest_first() -> None:
    from edgeloop.cli.dashboard_chart import gate_points

    runs: list[dict[str, Any]] = [
        {"at": "b", "decision": "refused", "judged": 0.5},
        {"at": "x", "decision": "failed"},  # no figure: not a point
        {"at": "a", "decision": "promoted", "judged": 0.6},
    ]
    assert gate_points(runs) == (("a", 0.6, True), ("b", 0.5, False))
