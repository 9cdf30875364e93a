"""A local cloud to live with: stopped and started again on the same directory, it
continues where it stopped, and devices provisioned before the restart keep updating.

Two devices (one claim bundle and agent.toml, each its own serial and state
directory, a synthetic sensor) run through the restart; after it the cloud has the
same root, ports and agent.toml, the registry still holds the first run and version,
and a second version reaches both devices.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeloop.cli.local import agent_toml, claim_bundle
from edgeloop.factory.config import load_config
from edgeloop.local.broker import dying_with_parent
from edgeloop.local.runtime import LocalRuntime
from functions.common.fleet import FleetTable
from functions.common.registry import Registry
from tests.support_aws import VIBRATION_TOML
from tests.support_world import wait_for

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SERIAL = "pump-1"
SECOND = "pump-2"
WAIT = float(os.environ.get("RESTART_WAIT", "120"))


def start_cloud(state: Path) -> LocalRuntime:
    return LocalRuntime({"vibration": VIBRATION_TOML}, identity=True, state_dir=state)


def write_agent_toml(cloud: LocalRuntime, out: Path) -> str:
    """agent.toml as `edgeloop local up` writes it, with a synthetic sensor."""
    bundle = claim_bundle(cloud, out)
    assert bundle is not None
    trust = out / "root.json"
    trust.write_bytes(cloud.trust_root)
    text = agent_toml(
        SERIAL,
        load_config(cloud.config_dir / "vibration.toml"),
        cloud.broker_url,
        cloud.cdn.base_url,
        trust,
        out / "devices" / SERIAL,
        bundle,
    )
    (out / "agent.toml").write_text(text)
    return text


@pytest.fixture
def agent_process() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for agent in started:
        if agent.poll() is None:
            agent.terminate()
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()


def device_version(cloud: LocalRuntime, serial: str = SERIAL) -> int | None:
    record = FleetTable(cloud.client("dynamodb"), cloud.resources.fleet_table).get(serial)
    return None if record is None else record.report.version


def both_versions(cloud: LocalRuntime) -> list[int | None]:
    return [device_version(cloud, serial) for serial in (SERIAL, SECOND)]


def test_a_restarted_local_cloud_keeps_its_state_and_its_devices(
    tmp_path: Path, agent_process: list[subprocess.Popen[bytes]]
) -> None:
    state = tmp_path / "cloud"
    cloud = start_cloud(state)
    try:
        cloud.admissions().allow(SERIAL, "vibration", canary=True)
        cloud.admissions().allow(SECOND, "vibration")
        first_toml = write_agent_toml(cloud, tmp_path)
        first_root = cloud.trust_root
        config = tmp_path / "agent.toml"
        config.write_text(
            first_toml.replace('kind = "stdin"\nrate = 0.0', 'kind = "synthetic"\nrate = 200.0')
        )
        # One config for both, as on a bench of devices: the second names its serial
        # and state directory on the command line.
        second = ["--serial", SECOND, "--state", str(tmp_path / "devices" / SECOND)]
        for name, extra in ((SERIAL, []), (SECOND, second)):
            agent_process.append(
                subprocess.Popen(
                    dying_with_parent(
                        [sys.executable, "-m", "edge.cli", "run", "--config", str(config), *extra]
                    ),
                    stdout=subprocess.DEVNULL,
                    stderr=(tmp_path / f"agent-{name}.log").open("wb"),
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            )
        wait_for(
            lambda: None not in both_versions(cloud),
            timeout=WAIT,
            what=f"both devices to run a model (errors: {cloud.router.errors})",
        )
        first_version = device_version(cloud)
        running_before = max(v or 0 for v in both_versions(cloud))
        registry = Registry(cloud.client("dynamodb"), cloud.resources.registry_table)
        runs_before = {r["run_id"] for r in registry.runs("vibration", limit=50)}
        resources = cloud.resources
    finally:
        cloud.close()
    assert (state / "aws.state").is_file()

    cloud = start_cloud(state)
    try:
        # The same root, ports and names: the agent.toml written now is the one the
        # device already has.
        assert cloud.trust_root == first_root
        assert cloud.resources == resources
        assert write_agent_toml(cloud, tmp_path) == first_toml
        registry = Registry(cloud.client("dynamodb"), cloud.resources.registry_table)
        assert runs_before <= {r["run_id"] for r in registry.runs("vibration", limit=50)}
        versions = registry.published_versions("vibration", limit=20)
        assert first_version in {int(v["version"]) for v in versions}
        for serial in (SERIAL, SECOND):
            assert (tmp_path / "devices" / serial / "identity" / "identity.json").is_file()
        # The devices, never restarted, keep uploading; a newer version reaches both.
        wait_for(
            lambda: all((v or 0) > running_before for v in both_versions(cloud)),
            timeout=2 * WAIT,
            what=(
                f"both devices to run a version after v{running_before} "
                f"(now {both_versions(cloud)}; "
                f"errors: {cloud.router.errors})"
            ),
        )
        assert all(agent.poll() is None for agent in agent_process)
    finally:
        cloud.close()


def _local_up(models: Path, out: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgeloop.cli.main",
            "local",
            "up",
            "--models",
            str(models),
            "--thing",
            SERIAL,
            "--out",
            str(out),
            "--json",
        ],
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert up.stdout is not None
    first = up.stdout.readline()  # blocks until it is up (or has died: then it is "")
    assert first, up.stderr.read() if up.stderr else ""
    return up, json.loads(first)


def _edgeloop(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeloop.cli.main", *argv],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_local_up_started_again_has_the_same_root_ports_and_agent_toml(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(REPO / "models" / "vibration.toml", models / "vibration.toml")
    out = tmp_path / "state"
    seen = []
    for start in range(2):
        up, info = _local_up(models, out)
        try:
            assert info["resumed"] is bool(start)
            assert info["admission_table"]
            seen.append(
                (
                    (out / "root.json").read_bytes(),
                    (out / "agent.toml").read_text(),
                    info["aws_endpoint"],
                    info["registry_table"],
                )
            )
            if start == 0:
                # The operator's commands find the running cloud by its directory alone.
                added = _edgeloop(
                    "fleet", "allow", "pump-9", "--model", "vibration", "--local", str(out)
                )
                assert added.returncode == 0, added.stderr
            listed = _edgeloop("fleet", "allowed", "--local", str(out), "--json")
            assert listed.returncode == 0, listed.stderr
            assert {"pump-9", SERIAL} <= {e["value"] for e in json.loads(listed.stdout)["entries"]}
        finally:
            up.send_signal(signal.SIGINT)
            assert up.wait(60) == 130
    assert seen[0] == seen[1]
