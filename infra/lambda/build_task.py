"""Build the functions' /var/task: the locked dependencies, edgeloop's own code, the model configs.

    python infra/lambda/build_task.py --out DIR --target lambda   # what the image holds
    python infra/lambda/build_task.py --out DIR --target local    # the same, for this interpreter

The Dockerfile runs this script (`--target local` inside the image, where "local" is
the image's own Python), `make lambda-package` runs `--target lambda` on any machine,
and `make lambda-task-local` builds the tree the tests and the local cloud run the
functions from. One lock (requirements.lock, hashed) serves all three, so what the
tests import is what ships, version for version. Standard library only: it runs
before anything is installed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LOCK = HERE / "requirements.lock"
# The image: AWS Lambda's Python 3.13 base on Amazon Linux 2023 (glibc 2.34).
LAMBDA_PYTHON = "3.13"
# pip takes a wheel only for a platform tag it is given, so every manylinux tag that
# glibc 2.34 runs is listed.
LAMBDA_PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(34, 16, -1)),
    "manylinux2014_x86_64",
)
# What the functions import of edgeloop's own code; infra and the agent's CLI stay out.
PACKAGES = ("edgeloop", "edge", "functions")
STRIP = ("__pycache__", "*.pyc")


def pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *args], check=True
    )


def build(out: Path, target: str) -> int:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    platform = (
        [
            *(flag for tag in LAMBDA_PLATFORMS for flag in ("--platform", tag)),
            "--python-version",
            LAMBDA_PYTHON,
            "--implementation",
            "cp",
            "--only-binary=:all:",
        ]
        if target == "lambda"
        else []
    )
    pip("--require-hashes", "-r", str(LOCK), "--target", str(out), *platform)
    for package in PACKAGES:
        shutil.copytree(REPO / package, out / package, ignore=shutil.ignore_patterns(*STRIP))
    (out / "models").mkdir()
    for config in sorted((REPO / "models").glob("*.toml")):
        shutil.copy2(config, out / "models" / config.name)
    for cache in out.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    return sum(f.stat().st_size for f in out.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--target", choices=("lambda", "local"), default="local")
    args = parser.parse_args()
    size = build(args.out, args.target)
    print(f"{args.out}: {size / 2**20:.1f} MiB ({args.target})")


if __name__ == "__main__":
    main()
