"""The functions' packaged tree (`make lambda-task-local`) and a clean interpreter over it.

The tree is what infra/lambda/build_task.py builds from the lock for this machine's
interpreter: the image's /var/task but for CPython 3.11 instead of 3.13. A process
that imports from it sees only the tree and the standard library, as a function on
Lambda sees only /var/task and the runtime's own.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILDER = REPO_ROOT / "infra" / "lambda" / "build_task.py"
TASK_LOCAL = REPO_ROOT / "build" / "lambda" / "task-local"
OWN_PACKAGES = ("edgeloop", "edge", "functions")
# What the Lambda runtime sets for every function; Powertools reads some of it to
# decide that it runs on Lambda (the Tracer then loads the X-Ray SDK).
LAMBDA_ENVIRONMENT = {
    "AWS_LAMBDA_FUNCTION_NAME": "edgeloop-test",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_EXECUTION_ENV": "AWS_Lambda_Image",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "LAMBDA_TASK_ROOT": "/var/task",
    "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
}


def load_builder() -> ModuleType:
    """infra/lambda/build_task.py as a module (`lambda` is no package name)."""
    spec = importlib.util.spec_from_file_location("build_task", BUILDER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def packaged_task_tree() -> Path:
    """build/lambda/task-local, rebuilt by make if the lock or the sources changed."""
    subprocess.run(
        ["make", "--no-print-directory", "-s", "lambda-task-local"], cwd=REPO_ROOT, check=True
    )
    stamp = json.loads((TASK_LOCAL / load_builder().STAMP_NAME).read_text())
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert (stamp["target"], stamp["python"]) == ("local", running), (
        f"{TASK_LOCAL} was built for {stamp}, the tests run Python {running}: "
        "rm -r build/lambda and run make lambda-task-local"
    )
    return TASK_LOCAL


def run_in_task(
    tree: Path, code: str, env: Mapping[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`code` in a new interpreter whose path is the tree and the standard library only.

    -I drops PYTHONPATH, the user site and the current directory; -S drops
    site-packages, so nothing of the development virtualenv can be imported.
    """
    prelude = f"import sys; sys.path.insert(0, {str(tree)!r})\n"
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", prelude + code],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _module_file(root: Path, name: str) -> Path | None:
    path = root.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def _guards_import_error(handler: ast.ExceptHandler) -> bool:
    return handler.type is not None and any(
        name in ast.unparse(handler.type) for name in ("ImportError", "ModuleNotFoundError")
    )


def _imports(root: Path, path: Path, module: str) -> Iterable[str]:
    """Every module `path` imports, in function bodies too; not those under
    TYPE_CHECKING nor the optional ones (tried, with an ImportError fallback)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(nodes: Iterable[ast.AST]) -> Iterable[str]:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                yield from visit(node.orelse)
                continue
            if isinstance(node, ast.Try) and any(_guards_import_error(h) for h in node.handlers):
                yield from visit([*node.handlers, *node.orelse, *node.finalbody])
                continue
            if isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    name = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    name = node.module or ""
                yield name
                for alias in node.names:
                    if _module_file(root, f"{name}.{alias.name}"):
                        yield f"{name}.{alias.name}"
            yield from visit(ast.iter_child_nodes(node))

    return visit(ast.parse(path.read_text(encoding="utf-8")).body)


def function_imports(root: Path = REPO_ROOT) -> tuple[list[str], list[str]]:
    """The project modules the functions reach and the third-party modules they import.

    Read from the source (imports inside function bodies included), so a lazy import
    that only a retrain would reach counts as much as a handler's first line.
    """
    todo = [
        ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for p in (root / "functions").rglob("*.py")
    ]
    own: set[str] = set()
    third_party: set[str] = set()
    while todo:
        module = todo.pop()
        if module in own:
            continue
        own.add(module)
        path = _module_file(root, module)
        assert path is not None, module
        for name in _imports(root, path, module):
            top = name.split(".")[0]
            if top in OWN_PACKAGES:
                if _module_file(root, name):
                    todo.append(name)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(name)
    return sorted(own), sorted(third_party)
