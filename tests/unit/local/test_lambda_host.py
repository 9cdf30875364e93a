"""The local Lambda host: what a function may import, write and take, as in Lambda."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgeloop.local.lambda_host import (
    FunctionError,
    FunctionTimeout,
    PackagedFunction,
    image_environment,
)
from edgeloop.local.stack_template import FunctionSpec

HANDLER = """
import os, sys, time

def write_beside_itself(event, context):
    with open(os.path.join(os.path.dirname(__file__), "written.txt"), "w") as f:
        f.write("x")
    return "wrote"

def write_in_tmp(event, context):
    path = os.path.join(os.environ["TMPDIR"], "scratch.txt")
    with open(path, "w") as f:
        f.write("x")
    return open(path).read()

def where_am_i(event, context):
    return {
        "home": os.environ.get("HOME"),
        "path": sys.path,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "site": "site" in sys.modules,
    }

def import_numpy(event, context):
    import numpy
    return numpy.__file__

def sleep(event, context):
    time.sleep(event["seconds"])
    return "slept"
"""


def function(tmp_path: Path, name: str, timeout: int = 30) -> PackagedFunction:
    task = tmp_path / "task"
    (task / "app").mkdir(parents=True, exist_ok=True)
    (task / "app" / "__init__.py").write_text("")
    (task / "app" / "handler.py").write_text(HANDLER)
    spec = FunctionSpec(
        logical_id=name,
        handler=f"app.handler.{name}",
        environment={"STAGE": "test"},
        timeout=timeout,
        memory=256,
        role="Role",
        statements=[],
    )
    return PackagedFunction(
        spec, task_root=task, workdir=tmp_path / "work", region="eu-west-1", credentials={}
    )


def test_a_function_cannot_write_beside_its_code(tmp_path: Path) -> None:
    host = function(tmp_path, "write_beside_itself")
    try:
        with pytest.raises(FunctionError, match="Read-only file system"):
            host({})
    finally:
        host.close()
    assert not (tmp_path / "task" / "app" / "written.txt").exists()


def test_a_function_may_write_in_its_tmp(tmp_path: Path) -> None:
    host = function(tmp_path, "write_in_tmp")
    try:
        assert host({}) == "x"
    finally:
        host.close()


def test_a_function_sees_only_its_task_tree_and_the_standard_library(tmp_path: Path) -> None:
    host = function(tmp_path, "where_am_i")
    try:
        seen = host({})
    finally:
        host.close()
    assert seen["home"] is None
    assert seen["path"][0] == str(tmp_path / "task")
    assert not any("site-packages" in entry for entry in seen["path"])
    assert seen["site"] is False
    assert 0 < seen["remaining_ms"] <= 30_000


def test_a_package_outside_the_task_tree_is_not_importable(tmp_path: Path) -> None:
    # numpy is in the development venv running this test, and not in the task tree.
    import numpy  # noqa: F401

    host = function(tmp_path, "import_numpy")
    try:
        with pytest.raises(FunctionError, match="No module named 'numpy'"):
            host({})
    finally:
        host.close()


def test_a_call_past_its_timeout_is_killed_and_the_next_call_gets_a_fresh_container(
    tmp_path: Path,
) -> None:
    host = function(tmp_path, "sleep", timeout=1)
    try:
        with pytest.raises(FunctionTimeout):
            host({"seconds": 30})
        assert host({"seconds": 0}) == "slept"
        assert host.cold_starts == 2
    finally:
        host.close()


def test_a_warm_container_is_reused(tmp_path: Path) -> None:
    host = function(tmp_path, "write_in_tmp")
    try:
        for _ in range(3):
            host({})
        assert host.cold_starts == 1
    finally:
        host.close()


def test_the_image_environment_points_at_the_local_task_tree(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM base\nENV MODEL_CONFIG_DIR=/var/task/models\nCMD ["x"]\n')
    env = image_environment(dockerfile, tmp_path / "task")
    assert env == {"MODEL_CONFIG_DIR": os.fspath(tmp_path / "task" / "models")}
