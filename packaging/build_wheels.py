"""Build the project's two wheels from a clean copy of the tree: stdlib and pip only.

    python packaging/build_wheels.py --out build/wheels            # both
    python packaging/build_wheels.py --out build/wheels agent      # the device's only

`edgeloop-agent` (packaging/agent/pyproject.toml) is what a device installs: `edge` and
the device-side core of `edgeloop`. `edgeloop` (pyproject.toml) is the operator's CLI
and depends on it. The copy holds only what the two wheels are built from, so a stale
build/ or egg-info in the working tree never leaks into a wheel, and the build writes
nothing into the tree. pip fetches setuptools for the isolated build like any sdist.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]
# Each distribution's project directory, relative to the tree.
PROJECTS = {"agent": "packaging/agent", "operator": "."}
# What the two pyprojects read: their packages, metadata files and requirement lists.
INPUTS = (
    "pyproject.toml",
    "README.md",
    "packaging/agent",
    "edge",
    "edgeloop",
    "functions/__init__.py",
    "functions/common",
)
# Their wheels' file names start so (the version follows).
WHEEL = {"agent": "edgeloop_agent-", "operator": "edgeloop-"}
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")


def stage(source: Path, into: Path) -> None:
    for name in INPUTS:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, into / name, ignore=IGNORED)
        else:
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, into / name)


def build(out: Path, which: Sequence[str], source: Path = SOURCE_ROOT) -> list[Path]:
    """The wheels of `which` (keys of PROJECTS) in `out`, by file name."""
    unknown = sorted(set(which) - set(PROJECTS))
    if unknown:
        raise SystemExit(f"no such wheel: {', '.join(unknown)} (choose from {', '.join(PROJECTS)})")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeloop-wheels-") as scratch:
        tree = Path(scratch)
        stage(source, tree)
        projects = [str(tree / PROJECTS[name]) for name in which]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "-w",
                str(out),
                *projects,
            ],
            check=True,
        )
    return sorted(p for p in out.glob("*.whl") if any(p.name.startswith(WHEEL[w]) for w in which))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=SOURCE_ROOT / "build" / "wheels")
    parser.add_argument("which", nargs="*", help=f"any of {', '.join(PROJECTS)} (default: both)")
    args = parser.parse_args(argv)
    for wheel in build(args.out, args.which or sorted(PROJECTS)):
        print(wheel)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
