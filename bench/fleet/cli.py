"""python -m bench.fleet: some sizes, kept runs, printed or saved as bench.run saves them."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import bench.fleet
from bench.common import write_result
from bench.fleet.results import measure
from bench.fleet.settings import SIZES
from bench.readme import rewrite_readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet",
        description=bench.fleet.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        default=list(SIZES),
        help="fleet sizes to run against moto; none (with --reuse): cost the kept runs again",
    )
    parser.add_argument("--out", type=Path, help="write the figures here (default: print)")
    parser.add_argument(
        "--save",
        action="store_true",
        help="write them to bench/results/fleet.json and the README's table, as bench.run does",
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        help="an earlier result whose real runs of other sizes are kept as measured",
    )
    args = parser.parse_args(argv)
    start = time.monotonic()
    reuse = None
    if args.reuse:
        try:
            reuse = json.loads(args.reuse.read_text())["runs"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            parser.error(f"--reuse {args.reuse}: not a fleet result to keep runs from ({exc})")
    if not args.sizes and not reuse:
        parser.error("no size to run and no --reuse: nothing to cost")
    figures = measure(args.sizes, reuse)
    figures["seconds"] = round(time.monotonic() - start, 1)
    text = json.dumps(figures, indent=2, default=float)
    if args.save:
        print(f"fleet: {write_result('fleet', figures)}")
        rewrite_readme()
    elif args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0
