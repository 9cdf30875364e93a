"""The functions' packaged tree holds everything they import: built from the lock alone,
imported by an interpreter that sees nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support_task import (
    LAMBDA_ENVIRONMENT,
    function_imports,
    packaged_task_tree,
    run_in_task,
)

HANDLERS = ("presign", "retrain", "status", "evaluate_rollouts", "rollback")


@pytest.fixture(scope="module")
def task_tree() -> Path:
    return packaged_task_tree()


def test_the_import_scan_sees_the_functions_lazy_imports() -> None:
    """The scan below is only as good as what it finds: the exporter's and the trust
    repository's imports sit in function bodies and modules the handlers reach late."""
    own, third_party = function_imports()
    assert {f"functions.{name}.handler" for name in HANDLERS} <= set(own)
    assert {"edgeloop.factory.export", "edgeloop.runtime", "edgeloop.trust"} <= set(own)
    assert {"sklearn.cluster", "tflite", "securesystemslib.signer"} <= set(third_party)


@pytest.mark.slow
def test_every_handler_imports_from_the_packaged_tree_alone_as_on_lambda(
    task_tree: Path,
) -> None:
    """Each handler, with Lambda's environment (Powertools' Tracer then needs the X-Ray
    SDK), in a clean interpreter whose path is the tree and the standard library."""
    code = (
        "import importlib, json\n"
        f"for name in {HANDLERS!r}:\n"
        "    module = importlib.import_module(f'functions.{name}.handler')\n"
        "    assert callable(module.handler), name\n"
        "    assert module.__file__.startswith(sys.path[0]), module.__file__\n"
        "import aws_lambda_powertools, boto3\n"
        "print(json.dumps([m.__file__ for m in (aws_lambda_powertools, boto3)]))\n"
    )
    result = run_in_task(task_tree, code, LAMBDA_ENVIRONMENT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert all(path.startswith(str(task_tree)) for path in json.loads(result.stdout))


@pytest.mark.slow
def test_every_module_the_functions_import_is_in_the_packaged_tree(task_tree: Path) -> None:
    """Lazy imports too (scikit-learn's estimators, LiteRT through the runtime's
    backend list): a dependency missing from the lock fails here, not in a retrain."""
    own, third_party = function_imports()
    code = (
        "import importlib, json\n"
        "missing = {}\n"
        f"for name in {[*own, *third_party]!r}:\n"
        "    try:\n"
        "        module = importlib.import_module(name)\n"
        "    except ImportError as exc:\n"
        "        missing[name] = str(exc)\n"
        "        continue\n"
        "    where = getattr(module, '__file__', None) or ''\n"
        "    if not where.startswith(sys.path[0]):\n"
        "        missing[name] = 'imported from outside the tree: ' + where\n"
        "from edgeloop.runtime import _interpreter_class\n"
        "print(json.dumps({'missing': missing, 'backend': _interpreter_class()[0]}))\n"
    )
    result = run_in_task(task_tree, code, LAMBDA_ENVIRONMENT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["missing"] == {}
    assert report["backend"] == "ai_edge_litert"
