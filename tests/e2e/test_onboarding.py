"""A fleet onboards itself: twenty agents holding only the claim bundle and their own
serials provision against the local IoT Core, get their model and report installs;
a serial not on the allow-list is refused, and both sides say why."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeloop.cli.local import agent_toml, claim_bundle
from edgeloop.factory.config import load_config
from edgeloop.local.broker import dying_with_parent
from edgeloop.local.runtime import LocalRuntime
from functions.common.fleet import FleetTable
from tests.support_aws import VIBRATION_TOML
from tests.support_world import wait_for

pytestmark = [pytest.mark.slow]

DEVICES = 20
ADMITTED = r"pump-[0-9]{3}"


@pytest.fixture
def cloud() -> Iterator[LocalRuntime]:
    with LocalRuntime({"vibration": VIBRATION_TOML}, identity=True) as running:
        yield running


def fleet_config(cloud: LocalRuntime, tmp_path: Path) -> Path:
    """One agent.toml for the whole batch, as `edgeloop local up` writes it; each device
    is started with its own --serial and --state."""
    bundle = claim_bundle(cloud, tmp_path)
    assert bundle is not None
    trust = tmp_path / "root.json"
    trust.write_bytes(cloud.trust_root)
    text = agent_toml(
        "unused",
        load_config(cloud.config_dir / "vibration.toml"),
        cloud.broker_url,
        cloud.cdn.base_url,
        trust,
        tmp_path / "state",
        bundle,
    )
    # Each device streams its own synthetic vibration until a model runs: a batch of
    # 100 rows every 2 s, which the local cloud keeps up with for twenty devices.
    text = text.replace('kind = "stdin"\nrate = 0.0', 'kind = "synthetic"\nrate = 50.0')
    text = text.replace('serial = "unused"\n', "")
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def start(config: Path, tmp_path: Path, serial: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        dying_with_parent(
            [
                sys.executable,
                "-m",
                "edge.cli",
                "run",
                "--config",
                str(config),
                "--serial",
                serial,
                "--state",
                str(tmp_path / "devices" / serial),
            ]
        ),
        stdout=(tmp_path / f"{serial}.out").open("wb"),
        stderr=(tmp_path / f"{serial}.log").open("wb"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_twenty_devices_onboard_themselves_and_install_their_model(
    cloud: LocalRuntime, tmp_path: Path
) -> None:
    # The platform team admits a range of serials as named canaries: nothing else.
    cloud.admissions().allow_pattern(ADMITTED, "vibration", canary=True)
    config = fleet_config(cloud, tmp_path)
    serials = [f"pump-{i:03d}" for i in range(DEVICES)]
    started = time.monotonic()
    agents = [start(config, tmp_path, s) for s in serials]
    rogue = start(config, tmp_path, "rogue-1")
    fleet = FleetTable(cloud.client("dynamodb"), cloud.resources.fleet_table)
    try:
        # The refused device exits at once, saying why, and provisions nothing.
        assert rogue.wait(120) == 4
        said = (tmp_path / "rogue-1.log").read_text()
        assert "serial rogue-1" in said
        assert "not on the fleet's allow-list" in said
        assert not (tmp_path / "devices" / "rogue-1" / "identity" / "identity.json").exists()
        # The cloud's side says so too, and the registry has no such thing.
        assert any("rogue-1" in r for r in cloud.provisioning_refusals())
        with pytest.raises(cloud.client("iot").exceptions.ResourceNotFoundException):
            cloud.client("iot").describe_thing(thingName="rogue-1")

        def installed() -> set[str]:
            return {
                s
                for s in serials
                if (record := fleet.get(s)) is not None and record.report.version is not None
            }

        wait_for(
            lambda: installed() == set(serials),
            timeout=float(os.environ.get("ONBOARD_WAIT", "600")),
            what=f"every device to report an installed model (errors: {cloud.router.errors})",
        )
        elapsed = time.monotonic() - started
        print(f"\n{DEVICES} devices from first start to an installed model: {elapsed:.1f} s")
        for serial in serials:
            thing = cloud.client("iot").describe_thing(thingName=serial)
            assert thing["attributes"]["model"] == "vibration"
            assert agents[serials.index(serial)].poll() is None, serial
    finally:
        for agent in [*agents, rogue]:
            if agent.poll() is None:
                agent.terminate()
        for agent in [*agents, rogue]:
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()
