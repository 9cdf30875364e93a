"""Build the functions' /var/task: locked dependencies, the project's packages, model configs.

    python infra/lambda/build_task.py --out DIR [--target lambda|local]

One builder for every copy of the tree. The Dockerfile runs it inside the Lambda base
image (`--target local`: that image's own interpreter); `make lambda-package` runs it
here for the Lambda platform (`--target lambda`: wheels for CPython 3.13 on
manylinux_2_34 x86_64, whatever this machine runs); `make lambda-task-local` runs it
for this machine's interpreter, which is the tree the packaged-function tests import.

Standard library only, so it runs in the bare base image before anything is installed,
and offline except for the package registry pip is set up to use. Every wheel is checked
against the lock's hashes (`--require-hashes`), and no dependency is resolved here: the
lock (`make lock`) is the whole list.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]
LOCK = Path("infra/lambda/requirements.lock")
# The project's own packages and the model configs: the only inputs besides the lock.
# .dockerignore admits exactly these (tests/infrastructure checks the two agree).
PROJECT_PACKAGES = ("edgeloop", "edge", "functions")
MODEL_CONFIGS = "models/*.toml"
# The Lambda platform: the public.ecr.aws/lambda/python:3.13 base image is Amazon
# Linux 2023 (glibc 2.34) on x86_64, as infra/ declares the functions' architecture.
LAMBDA_PYTHON = "3.13"
LAMBDA_PLATFORM = "manylinux_2_34_x86_64"
LAMBDA_GLIBC_MINOR = 34
# Written into every tree this builder makes; a non-empty --out without it is refused,
# so a mistyped --out never wipes anything else.
STAMP_NAME = "edgeloop-task.json"
# pip's console scripts: their #! names the build interpreter, and nothing runs them.
STRIPPED_TOP = ("bin",)


class BuildRefused(Exception):
    """The tree cannot be built as asked; the message says why and what to do."""


def lambda_platform_tags() -> list[str]:
    """Every platform tag a glibc 2.34 x86_64 host accepts, newest first.

    pip takes --platform literally: given only manylinux_2_34 it skips a
    manylinux_2_27 wheel (LiteRT's) that the image's own pip would install. On a
    real host pip derives this same list from the running glibc.
    """
    tags = [f"manylinux_2_{minor}_x86_64" for minor in range(LAMBDA_GLIBC_MINOR, 16, -1)]
    return [*tags, "manylinux2014_x86_64"]


def pip_command(target: str, out: Path, lock: Path) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        "--root-user-action=ignore",
        "--no-deps",
        "--require-hashes",
        "--only-binary=:all:",
        "--no-compile",
        "--target",
        str(out),
        "-r",
        str(lock),
    ]
    if target == "lambda":
        abi = "cp" + LAMBDA_PYTHON.replace(".", "")
        for platform in lambda_platform_tags():
            command += ["--platform", platform]
        command += [
            "--python-version",
            LAMBDA_PYTHON,
            "--implementation",
            "cp",
            "--abi",
            abi,
        ]
    return command


def prepare(out: Path) -> None:
    """An empty `out`, or one this builder made before (then emptied)."""
    if out.exists() and not out.is_dir():
        raise BuildRefused(f"--out {out} is a file; name a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / STAMP_NAME).is_file():
            raise BuildRefused(
                f"--out {out} is not empty and was not built by this script (no {STAMP_NAME}); "
                "name an empty or new directory"
            )
        for entry in out.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    out.mkdir(parents=True, exist_ok=True)


def project_inputs(source: Path) -> list[Path]:
    """The project's files that go into the tree, relative to `source` (and kept there)."""
    files = [
        path.relative_to(source)
        for package in PROJECT_PACKAGES
        for path in sorted((source / package).rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]
    configs = sorted(source.glob(MODEL_CONFIGS))
    if not configs:
        raise BuildRefused(f"no model configs match {source / MODEL_CONFIGS}")
    return files + [config.relative_to(source) for config in configs]


def copy_project(source: Path, out: Path) -> None:
    for package in PROJECT_PACKAGES:
        if (out / package).exists():
            raise BuildRefused(
                f"a locked dependency installed a top-level {package!r}, which is the "
                "project's own package name; remove it from the lock"
            )
    for relative in project_inputs(source):
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / relative, out / relative)


def strip(out: Path) -> None:
    """No bytecode from whichever interpreter pip ran under, no console scripts."""
    for name in STRIPPED_TOP:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for cache in sorted(out.rglob("__pycache__"), reverse=True):
        if cache.is_dir():
            shutil.rmtree(cache)
    for compiled in out.rglob("*.pyc"):
        compiled.unlink()


def compile_bytecode(out: Path) -> None:
    """Bytecode for the interpreter that will run the tree, which is the one running now.

    /var/task is read-only on Lambda, so without it every cold start compiles
    scikit-learn and SciPy in memory. Unchecked hashes: the tree never changes after
    the build, and its files' times are whatever the image layers keep.
    """
    subprocess.run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            str(out),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def tree_size(out: Path) -> tuple[int, int]:
    files = [p for p in out.rglob("*") if p.is_file() and not p.is_symlink()]
    return len(files), sum(p.stat().st_size for p in files)


def build(out: Path, target: str, source: Path, lock: Path, compile_: bool) -> tuple[int, int]:
    if not lock.is_file():
        raise BuildRefused(f"no lock at {lock}: run `make lock`")
    prepare(out)
    subprocess.run(pip_command(target, out, lock), check=True)
    copy_project(source, out)
    strip(out)
    if compile_:
        compile_bytecode(out)
    stamp = {
        "target": target,
        "python": LAMBDA_PYTHON
        if target == "lambda"
        else f"{sys.version_info[0]}.{sys.version_info[1]}",
        "platform": LAMBDA_PLATFORM if target == "lambda" else "this machine",
        "lock": str(lock.name),
        "bytecode": compile_,
    }
    (out / STAMP_NAME).write_text(json.dumps(stamp, sort_keys=True) + "\n")
    return tree_size(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", required=True, type=Path, help="the tree to build (/var/task)")
    parser.add_argument(
        "--target",
        choices=("lambda", "local"),
        default="lambda",
        help=f"lambda: wheels for CPython {LAMBDA_PYTHON} on {LAMBDA_PLATFORM}; local: for "
        "the interpreter running this script (default: %(default)s)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=SOURCE_ROOT,
        help="the project checkout (default: %(default)s)",
    )
    parser.add_argument("--lock", type=Path, default=None, help=f"default: SOURCE/{LOCK}")
    parser.add_argument(
        "--bytecode",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile .pyc for the running interpreter (default: only for --target local, "
        "where the running interpreter is the one that imports the tree)",
    )
    args = parser.parse_args(argv)
    compile_ = args.target == "local" if args.bytecode is None else args.bytecode
    if compile_ and args.target == "lambda":
        print(
            "error: --bytecode needs --target local: this interpreter is not the one "
            "that runs a Lambda tree",
            file=sys.stderr,
        )
        return 2
    lock = args.lock or args.source / LOCK
    try:
        files, size = build(args.out, args.target, args.source, lock, compile_)
    except BuildRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(
            f"error: {exc.cmd[2] if len(exc.cmd) > 2 else exc.cmd[0]} failed "
            f"(exit {exc.returncode}); its output is above",
            file=sys.stderr,
        )
        return 1
    print(f"{args.out}: {files} files, {size / 1e6:.1f} MB ({size} bytes), target {args.target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
