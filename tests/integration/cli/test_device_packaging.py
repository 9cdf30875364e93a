"""Running the agent on a device: the systemd unit and the Greengrass v2 recipe are checked."""

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
RECIPE = REPO / "packaging" / "greengrass" / "recipe.yaml"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
WHEEL = f"{PROJECT['name']}-{PROJECT['version']}-py3-none-any.whl"


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
def recipe() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    doc: dict[str, Any] = yaml.safe_load(RECIPE.read_text())
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


def test_the_greengrass_recipe_installs_this_projects_wheel(recipe: dict[str, Any]) -> None:
    [manifest] = recipe["Manifests"]
    [artifact] = manifest["Artifacts"]
    assert artifact["URI"].startswith("s3://")
    assert artifact["URI"].endswith("/" + WHEEL)
    assert f"{{artifacts:path}}/{WHEEL}" in manifest["Lifecycle"]["install"]["Script"]


def test_every_configuration_the_recipe_uses_has_a_default(recipe: dict[str, Any]) -> None:
    defaults = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    used = set(re.findall(r"\{configuration:/(\w+)\}", RECIPE.read_text()))
    assert used
    assert used <= set(defaults)


def test_the_build_backend_understands_the_license_field() -> None:
    # A license written as an SPDX string needs setuptools 77 or later to build a wheel at all.
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]
    if isinstance(PROJECT.get("license"), str):
        [setuptools] = [r for r in build["requires"] if r.startswith("setuptools")]
        floor = re.search(r">=\s*(\d+)", setuptools)
        assert floor is not None
        assert int(floor.group(1)) >= 77
