"""What each install holds and runs: the device's wheel by each Greengrass recipe path,
and the operator's wheel, each into a fresh venv from wheels built from this tree.

The three installs run at once (about a minute and a half from pip's cache); the
NumPy < 2 path (tflite-runtime 2.14) needs Python <= 3.11.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgeloop.cli.recipe import INTERPRETERS, agent_wheel, render

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VERSION: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
OPERATOR_WHEEL = f"edgeloop-{VERSION}-py3-none-any.whl"
# The module each interpreter extra brings, as edgeloop.runtime names its backend.
BACKENDS = {"litert": "ai_edge_litert", "tflite214": "tflite_runtime"}
# The project's top-level names a device must not hold, and the operator's subpackages.
NOT_ON_A_DEVICE = ("functions", "infra", "bench", "tests")
OPERATOR_SUBPACKAGES = ("cli", "demo", "factory", "local", "trust")
INSTALL_TIMEOUT = 900


@dataclass(frozen=True)
class Install:
    venv: Path
    distributions: tuple[str, ...]

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def site_packages(self) -> Path:
        [site] = self.venv.glob("lib/python3.*/site-packages")
        return site

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), capture_output=True, text=True, timeout=120, cwd=cwd or self.venv
        )

    def python(self, code: str) -> str:
        done = self.run(str(self.bin / "python"), "-c", code)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def console_scripts(self) -> list[str]:
        """The console scripts the project's distributions in this venv provide."""
        code = (
            "import json\nfrom importlib.metadata import distribution\n"
            f"dists = {list(self.distributions)!r}\n"
            "print(json.dumps(sorted(e.name for d in dists for e in "
            "distribution(d).entry_points if e.group == 'console_scripts')))"
        )
        names: list[str] = json.loads(self.python(code))
        return names


def _recipe_install_script(interpreter: str, work: Path, artifacts: Path) -> str:
    """The recipe's install step as Greengrass runs it, its variables filled in."""
    yaml = pytest.importorskip("yaml")
    recipe: dict[str, Any] = yaml.safe_load(render("edgeloop-test-artifacts"))
    [manifest] = recipe["Manifests"]
    script: str = manifest["Lifecycle"]["install"]["Script"]
    for variable, value in {
        "{work:path}": str(work),
        "{artifacts:path}": str(artifacts),
        "{configuration:/interpreter}": interpreter,
    }.items():
        script = script.replace(variable, value)
    assert "{" not in script, script
    # The recipe's python3, as this interpreter (the NumPy < 2 path needs <= 3.11).
    return script.replace("python3 -m venv", f"{sys.executable} -m venv", 1)


@pytest.fixture(scope="module")
def installs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Install]:
    if sys.version_info >= (3, 12):
        pytest.skip("tflite-runtime 2.14 (the NumPy < 2 path) has no wheel past Python 3.11")
    tmp = tmp_path_factory.mktemp("installs")
    wheels = tmp / "wheels"
    subprocess.run(
        [sys.executable, str(REPO / "packaging" / "build_wheels.py"), "--out", str(wheels)],
        check=True,
        timeout=300,
    )
    assert sorted(p.name for p in wheels.glob("*.whl")) == sorted([agent_wheel(), OPERATOR_WHEEL])
    scripts = {
        interpreter: _recipe_install_script(interpreter, tmp / interpreter, wheels)
        for interpreter in INTERPRETERS
    }
    operator = tmp / "operator" / "venv"
    scripts["operator"] = (
        f"{sys.executable} -m venv {operator} && {operator}/bin/pip install --quiet "
        f"--find-links {wheels} {wheels / OPERATOR_WHEEL}"
    )
    running = {}
    for name, script in scripts.items():
        log = (tmp / f"{name}.log").open("w")
        running[name] = (subprocess.Popen(["bash", "-c", script], stdout=log, stderr=log), log)
    failed = []
    for name, (process, log) in running.items():
        code = process.wait(timeout=INSTALL_TIMEOUT)
        log.close()
        if code != 0:
            failed.append(f"{name} (exit {code}):\n{(tmp / f'{name}.log').read_text()[-3000:]}")
    assert not failed, "\n".join(failed)
    found = {i: Install(tmp / i / "venv", ("edgeloop-agent",)) for i in INTERPRETERS}
    found["operator"] = Install(operator, ("edgeloop", "edgeloop-agent"))
    return found


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_each_recipe_path_installs_an_agent_that_runs(
    installs: dict[str, Install], interpreter: str
) -> None:
    device = installs[interpreter]
    done = device.run(str(device.bin / "edgeloop-agent"), "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"edgeloop-agent {VERSION}"
    # Every module of the agent imports: all it needs (python-tuf, paho-mqtt, ...) is there.
    imported = device.python(
        "import importlib, pkgutil, edge\n"
        "names = [m.name for m in pkgutil.iter_modules(edge.__path__)]\n"
        "for n in names: importlib.import_module('edge.' + n)\n"
        "from edgeloop.runtime import _interpreter_class\n"
        "print(len(names), _interpreter_class()[0])"
    )
    count, backend = imported.split()
    assert int(count) > 10
    assert backend == BACKENDS[interpreter]
    if interpreter == "tflite214":
        assert device.python("import numpy; print(numpy.__version__)").startswith("1.")


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_a_device_holds_only_the_device(installs: dict[str, Install], interpreter: str) -> None:
    device = installs[interpreter]
    top = {p.name for p in device.site_packages.iterdir()}
    assert {"edge", "edgeloop"} <= top
    assert not top & set(NOT_ON_A_DEVICE)
    assert not [s for s in OPERATOR_SUBPACKAGES if (device.site_packages / "edgeloop" / s).exists()]
    # No cloud SDK rides along either.
    assert not top & {"sklearn", "boto3", "botocore", "pydantic", "aws_lambda_powertools"}
    assert device.console_scripts() == ["edgeloop-agent"]
    assert not (device.bin / "edgeloop").exists()


def test_the_operator_holds_no_infra_and_only_the_functions_common_code(
    installs: dict[str, Install],
) -> None:
    site = installs["operator"].site_packages
    assert not (site / "infra").exists()
    assert sorted(p.name for p in (site / "functions").iterdir() if p.name != "__pycache__") == [
        "__init__.py",
        "common",
    ]
    assert all((site / "edgeloop" / s).is_dir() for s in OPERATOR_SUBPACKAGES)


@pytest.mark.parametrize("install", [*INTERPRETERS, "operator"])
def test_every_console_script_of_every_install_answers_help(
    installs: dict[str, Install], install: str
) -> None:
    venv = installs[install]
    scripts = venv.console_scripts()
    assert scripts
    for script in scripts:
        done = venv.run(str(venv.bin / script), "--help")
        assert done.returncode == 0, f"{script} --help: {done.stderr}"
        assert "Traceback" not in done.stderr


def test_every_operator_command_answers_help(installs: dict[str, Install]) -> None:
    """Each command and subcommand of `edgeloop`, by its parser, as installed."""
    operator = installs["operator"]
    code = (
        "import argparse, json\n"
        "from edgeloop.cli.main import build_parser\n"
        "def walk(parser, path):\n"
        "    yield path\n"
        "    for action in parser._actions:\n"
        "        if isinstance(action, argparse._SubParsersAction):\n"
        "            for name, sub in action.choices.items():\n"
        "                yield from walk(sub, [*path, name])\n"
        "print(json.dumps(list(walk(build_parser(), []))))"
    )
    commands: list[list[str]] = json.loads(operator.python(code))
    assert len(commands) > 10
    for command in commands:
        done = operator.run(str(operator.bin / "edgeloop"), *command, "--help")
        assert done.returncode == 0, f"edgeloop {' '.join(command)} --help: {done.stderr}"


def test_the_operators_feed_runs_on_a_small_csv(
    installs: dict[str, Install], tmp_path: Path
) -> None:
    config = REPO / "models" / "vibration.toml"
    names = tomllib.loads(config.read_text())["model"]["feature_names"]
    data = tmp_path / "sensor.csv"
    rows = [[str(t), *(str(t + i / 10) for i in range(len(names)))] for t in (1, 2)]
    data.write_text("\n".join(",".join(r) for r in [["timestamp", *names], *rows]) + "\n")
    operator = installs["operator"]
    done = operator.run(str(operator.bin / "edgeloop"), "feed", str(data), "--config", str(config))
    assert done.returncode == 0, done.stderr
    fed = [json.loads(line) for line in done.stdout.splitlines()]
    assert [len(r["x"]) for r in fed] == [len(names), len(names)]


def test_the_operators_commands_that_need_a_checkout_say_so(
    installs: dict[str, Install], tmp_path: Path
) -> None:
    """The demo runs the functions as `make lambda-task-local` builds them in a
    checkout: from a wheel it says so, without a traceback."""
    operator = installs["operator"]
    done = operator.run(
        str(operator.bin / "edgeloop"), "demo", "--no-live", "--out", str(tmp_path / "report")
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert "lambda-task-local" in done.stderr or "edgeloop[local]" in done.stderr
