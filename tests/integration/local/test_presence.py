"""A device that drops its connection shows offline in the fleet view without sending
anything: the broker publishes what the device left with it (its last will, the local
stand-in for IoT Core's lifecycle event), and the presence rule read from the
synthesized template writes it to the presence table in moto's DynamoDB."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from edgeloop.cli.local import agent_toml
from edgeloop.cli.main import main
from edgeloop.factory.config import load_config
from edgeloop.local.broker import dying_with_parent
from edgeloop.local.runtime import LocalRuntime
from tests.support_aws import VIBRATION_TOML
from tests.support_broker import EmbeddedAmqtt, Mosquitto, start_broker
from tests.support_world import wait_for

KEEPALIVE = 5  # the agent's least: the broker gives up on it after 7.5 s of silence


@pytest.fixture
def broker() -> Iterator[Mosquitto | EmbeddedAmqtt]:
    running = start_broker()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def cloud(broker: Mosquitto | EmbeddedAmqtt) -> Iterator[LocalRuntime]:
    with LocalRuntime({"vibration": VIBRATION_TOML}, broker_url=broker.url) as running:
        yield running


def fleet_view(cloud: LocalRuntime, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """`edgeloop fleet --json`, as the operator reads it, by thing."""
    code = main(
        [
            "fleet",
            "--model",
            "vibration",
            "--table",
            cloud.resources.fleet_table,
            "--presence-table",
            cloud.resources.presence_table,
            "--endpoint-url",
            cloud.aws.endpoint,
            "--json",
        ]
    )
    assert code == 0
    return {d["thing"]: d for d in json.loads(capsys.readouterr().out)["devices"]}


def start_agent(cloud: LocalRuntime, tmp_path: Path, thing: str) -> subprocess.Popen[bytes]:
    cloud.enroll(thing, "vibration")
    trust = tmp_path / "root.json"
    trust.write_bytes(cloud.trust_root)
    config = load_config(cloud.config_dir / "vibration.toml")
    text = agent_toml(
        thing, config, cloud.broker_url, cloud.cdn.base_url, trust, tmp_path / thing
    ).replace("[broker]\n", f"[broker]\nkeepalive = {KEEPALIVE}\n")
    assert "presence_will = true" in text  # what `edgeloop local up` writes, too
    path = tmp_path / f"{thing}.toml"
    path.write_text(text)
    # Its source is stdin: a pipe kept open and silent, so the agent waits for samples.
    return subprocess.Popen(
        dying_with_parent([sys.executable, "-m", "edge.cli", "run", "--config", str(path)]),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / f"{thing}.log").open("wb"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def drops_offline(
    cloud: LocalRuntime,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    drop: Callable[[subprocess.Popen[bytes]], None],
) -> None:
    """Start an agent, see it connected, `drop` it, and see it offline with its last
    report unchanged: nothing came from the device."""
    agent = start_agent(cloud, tmp_path, "pump-1")
    try:
        wait_for(
            lambda: fleet_view(cloud, capsys).get("pump-1", {}).get("presence") == "connected",
            timeout=120,
            what=f"the device reported and connected (rule errors: {cloud.router.errors})",
        )
        drop(agent)
        # What it sent before it went quiet has been recorded by now.
        wait_for(cloud.router.idle, timeout=60, what="the rules engine idle")
        before = fleet_view(cloud, capsys)["pump-1"]
        wait_for(
            lambda: fleet_view(cloud, capsys)["pump-1"]["presence"] == "offline",
            timeout=60,
            what=f"the device offline (rule errors: {cloud.router.errors})",
        )
        after = fleet_view(cloud, capsys)["pump-1"]
        assert after["offline_reason"] == "CONNECTION_LOST"
        assert after["last_report"] == before["last_report"]
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)


def kill(agent: subprocess.Popen[bytes]) -> None:
    """The process ends without a DISCONNECT; the kernel closes its socket."""
    agent.send_signal(signal.SIGKILL)
    agent.wait(10)


def freeze(agent: subprocess.Popen[bytes]) -> None:
    """The socket stays open and silent, as when a network path dies: only the
    keep-alive can tell, after 1.5x its interval."""
    agent.send_signal(signal.SIGSTOP)


def test_a_killed_device_shows_offline_without_sending_anything(
    cloud: LocalRuntime,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The command line reads the credentials the local cloud put in the environment,
    # not those boto3's default session kept from an earlier test.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    drops_offline(cloud, tmp_path, capsys, kill)


def test_a_silent_device_shows_offline_after_its_keep_alive(
    broker: Mosquitto | EmbeddedAmqtt,
    cloud: LocalRuntime,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if broker.kind != "mosquitto":
        pytest.skip("amqtt 0.12 does not close a connection whose keep-alive ran out")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    drops_offline(cloud, tmp_path, capsys, freeze)
