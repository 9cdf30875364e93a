"""The functions' image and the Docker-free tree come from one builder and one lock."""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import PurePosixPath

from tests.support_task import REPO_ROOT, load_builder

DOCKERFILE = REPO_ROOT / "infra" / "lambda" / "Dockerfile"


def _dockerignore_admits(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    admitted = True
    for negated, pattern in patterns:
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            admitted = negated
    return admitted


def _dockerignore() -> list[tuple[bool, str]]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return [(rule.startswith("!"), rule.removeprefix("!")) for rule in rules]


def test_the_image_context_holds_exactly_what_the_builder_reads() -> None:
    builder = load_builder()
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    files = [f for f in listed if (REPO_ROOT / f).is_file()]
    patterns = _dockerignore()
    context = {f for f in files if _dockerignore_admits(f, patterns)}
    read = {str(p) for p in builder.project_inputs(REPO_ROOT)} | {
        "infra/lambda/build_task.py",
        str(builder.LOCK),
    }
    assert read - context == set(), "the builder reads files .dockerignore leaves out"
    assert context - read == {"infra/lambda/Dockerfile"}


def test_the_image_is_the_lambda_python_the_lock_is_built_for() -> None:
    builder = load_builder()
    text = DOCKERFILE.read_text()
    assert re.search(
        rf"^FROM public\.ecr\.aws/lambda/python:{re.escape(builder.LAMBDA_PYTHON)}$",
        text,
        re.M,
    )
    # The image runs the same builder over the same lock, for its own interpreter.
    run = re.search(r"^RUN python3 (\S+) --out (\S+) --target local", text, re.M)
    assert run is not None
    assert run.groups() == ("/build/infra/lambda/build_task.py", '"${LAMBDA_TASK_ROOT}"')


def test_the_lock_pins_every_package_with_hashes_and_names_the_tracer_dependency() -> None:
    lock = (REPO_ROOT / load_builder().LOCK).read_text()
    pins = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", lock, re.M)
    assert len(pins) > 20
    blocks = re.split(r"^(?=[A-Za-z0-9._-]+==)", lock, flags=re.M)[1:]
    assert all("--hash=sha256:" in block for block in blocks)
    assert "aws-xray-sdk" in dict(pins)
