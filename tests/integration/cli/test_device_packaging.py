"""Running the agent on a device: the systemd unit and the Greengrass v2 recipe are checked.

tests/packaged/test_installs.py installs each recipe path into a fresh venv."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
UNIT = REPO / "packaging" / "systemd" / "edgeloop-agent.service"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
AGENT = tomllib.loads((REPO / "packaging" / "agent" / "pyproject.toml").read_text())
WHEEL = f"edgeloop_agent-{PROJECT['version']}-py3-none-any.whl"
BUCKET = "edgeloop-artifacts-123"


def _agent_script() -> Path:
    found = shutil.which("edgeloop-agent") or str(Path(sys.executable).parent / "edgeloop-agent")
    return Path(found)


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    agent = _agent_script()
    if not agent.is_file():
        pytest.skip("edgeloop-agent is not installed in this environment (pip install -e .)")
    # verify checks that ExecStart's program exists: point it at this environment's agent.
    text = UNIT.read_text().replace("/opt/edgeloop/bin/edgeloop-agent", str(agent))
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # Unknown keys are only warnings: any output at all is a mistake in the unit.
    assert done.stderr.strip() == "", done.stderr


def test_the_systemd_unit_runs_the_agent_with_its_config_and_keeps_state() -> None:
    text = UNIT.read_text()
    assert (
        "ExecStart=/opt/edgeloop/bin/edgeloop-agent run --config /etc/edgeloop/agent.toml" in text
    )
    assert "StateDirectory=edgeloop" in text
    assert "KillSignal=SIGTERM" in text
    assert "After=network-online.target time-sync.target" in text
    assert re.search(r"^User=edgeloop$", text, re.M)


@pytest.fixture(scope="module")
def recipe_text() -> str:
    from edgeloop.cli.recipe import render

    return render(BUCKET)


@pytest.fixture(scope="module")
def recipe(recipe_text: str) -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    doc: dict[str, Any] = yaml.safe_load(recipe_text)
    return doc


def test_the_greengrass_recipe_has_the_v2_structure(recipe: dict[str, Any]) -> None:
    assert recipe["RecipeFormatVersion"] == "2020-01-25"
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-_]{0,127}", recipe["ComponentName"])
    assert recipe["ComponentVersion"] == PROJECT["version"]
    assert recipe["ComponentDescription"]
    assert recipe["ComponentPublisher"]
    [manifest] = recipe["Manifests"]
    assert manifest["Platform"]["os"] == "linux"
    lifecycle = manifest["Lifecycle"]
    assert set(lifecycle) >= {"install", "run"}
    assert "edgeloop-agent run --config {configuration:/configPath}" in lifecycle["run"]["Script"]
    for step in ("install", "run"):
        assert lifecycle[step]["RequiresPrivilege"] is False


def test_the_greengrass_recipe_installs_the_agents_wheel_from_the_stacks_bucket(
    recipe: dict[str, Any],
) -> None:
    [manifest] = recipe["Manifests"]
    [artifact] = manifest["Artifacts"]
    assert artifact["URI"] == f"s3://{BUCKET}/greengrass/{WHEEL}"
    install = manifest["Lifecycle"]["install"]["Script"]
    assert f'"{{artifacts:path}}/{WHEEL}[{{configuration:/interpreter}}]"' in install


def test_every_interpreter_the_recipe_offers_is_an_extra_of_the_agent(
    recipe: dict[str, Any],
) -> None:
    from edgeloop.cli.recipe import INTERPRETERS

    extras = AGENT["tool"]["setuptools"]["dynamic"]["optional-dependencies"]
    # Extras beside the interpreters (a serial sensor's pyserial) are not interpreters.
    assert set(INTERPRETERS) <= set(extras)
    assert recipe["ComponentConfiguration"]["DefaultConfiguration"]["interpreter"] == "litert"


def test_the_two_distributions_share_one_version() -> None:
    import edgeloop
    from edgeloop.cli.recipe import agent_wheel

    assert AGENT["project"]["version"] == PROJECT["version"] == edgeloop.__version__
    assert f"edgeloop-agent[litert]=={PROJECT['version']}" in PROJECT["dependencies"]
    assert agent_wheel() == WHEEL


def test_every_configuration_the_recipe_uses_has_a_default(
    recipe: dict[str, Any], recipe_text: str
) -> None:
    defaults = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    used = set(re.findall(r"\{configuration:/(\w+)\}", recipe_text))
    assert used
    assert used <= set(defaults)


def test_the_recipe_reads_its_bucket_from_the_stack_output(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeloop.cli import stack
    from edgeloop.cli.main import main

    asked: list[str] = []

    def outputs(name: str, endpoint_url: str | None = None) -> stack.StackOutputs:
        asked.append(name)
        return stack.StackOutputs(name, {stack.ARTIFACT_BUCKET: BUCKET})

    monkeypatch.setattr(stack, "read_outputs", outputs)
    assert main(["recipe", "--stack", "edgeloop", "--interpreter", "tflite214"]) == 0
    out = capsys.readouterr().out
    assert asked == ["edgeloop"]
    assert f"URI: s3://{BUCKET}/greengrass/{WHEEL}" in out
    assert "interpreter: tflite214" in out


def test_the_build_backend_understands_the_license_field() -> None:
    # A license written as an SPDX string needs setuptools 77 or later to build a wheel at all.
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]
    if isinstance(PROJECT.get("license"), str):
        [setuptools] = [r for r in build["requires"] if r.startswith("setuptools")]
        floor = re.search(r">=\s*(\d+)", setuptools)
        assert floor is not None
        assert int(floor.group(1)) >= 77


def test_the_recipe_uploads_the_agents_wheel_where_it_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    moto = pytest.importorskip("moto")
    import boto3

    from edgeloop.cli.main import main

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    wheel = tmp_path / WHEEL
    wheel.write_bytes(b"PK wheel")
    wrong = tmp_path / f"edgeloop-{PROJECT['version']}-py3-none-any.whl"
    wrong.write_bytes(b"PK operator")
    with moto.mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        # The operator's wheel is refused: the recipe installs the agent's.
        assert main(["recipe", "--bucket", BUCKET, "--upload", str(wrong)]) != 0
        assert WHEEL in capsys.readouterr().err
        assert main(["recipe", "--bucket", BUCKET, "--upload", str(wheel)]) == 0
        body = s3.get_object(Bucket=BUCKET, Key=f"greengrass/{WHEEL}")["Body"].read()
    assert body == b"PK wheel"
    assert f"URI: s3://{BUCKET}/greengrass/{WHEEL}" in capsys.readouterr().out
