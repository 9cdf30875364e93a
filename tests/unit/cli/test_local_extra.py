"""The operator's wheel without the `local` extra: the commands that need it say so."""

from __future__ import annotations

import importlib.util
from importlib.machinery import ModuleSpec
from typing import Any

import pytest

from edgeloop.cli import main as cli_main
from edgeloop.cli.errors import EXIT_FAILED
from edgeloop.local.stack_template import TemplateError


def _without(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    find_spec = importlib.util.find_spec

    def spec(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name == module else find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", spec)


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["demo", "--no-live"], "demo"),
        (["local", "up", "--models", "models"], "local up"),
    ],
)
def test_a_command_that_needs_the_local_extra_names_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    command: str,
) -> None:
    _without(monkeypatch, "moto")
    assert cli_main.main(argv) == EXIT_FAILED
    err = capsys.readouterr().err
    assert f"`edgeloop {command}` needs moto" in err
    assert "pip install 'edgeloop[local]'" in err


def test_local_status_needs_no_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    _without(monkeypatch, "moto")
    assert cli_main.main(["local", "status", "--dir", str(tmp_path)]) == EXIT_FAILED
    assert "needs moto" not in capsys.readouterr().err


def test_a_missing_lambda_build_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_build(args: Any) -> int:
        raise TemplateError("build/lambda/task-local is missing: make lambda-task-local")

    monkeypatch.setattr(cli_main, "_demo", no_build)
    assert cli_main.main(["demo", "--no-live"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "make lambda-task-local" in err
    assert "runs the functions as a checkout of this repository builds them" in err
    assert "Traceback" not in err
