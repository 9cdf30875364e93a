"""`make bench`: run the benchmarks, write bench/results/*.json, rewrite the README table.

    python -m bench.run                 # everything (about 10 minutes on 2 cores)
    python -m bench.run signal          # signals in: per-window cost, AUC through an agent
    python -m bench.run signal_real     # signals in from a real recording (make bench-data)
    python -m bench.run inference swap  # some; the table keeps the others' last results

Each section's figures are ratios measured side by side in one run, or counts;
bench/results/<section>.json holds the details and the machine they ran on.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from bench import (
    agent_footprint,
    fanout,
    fleet,
    handoff,
    inference,
    loop,
    patchgen,
    poison,
    scale,
    signal,
    signal_real,
    stage_delay,
    swap,
)
from bench import bytes as bytes_bench
from bench.common import write_result
from bench.readme import rewrite_readme
from bench.recordings import RecordingError
from edgeloop.local.stack_template import TemplateError

SECTIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "bytes": lambda: bytes_bench.measure(bytes_bench.VARIANTS),
    "inference": inference.measure,
    "swap": swap.measure,
    "agent_footprint": agent_footprint.measure,
    "loop": loop.measure,
    "fanout": fanout.measure,
    "scale": scale.measure,
    "patchgen": patchgen.measure,
    "poison": poison.measure,
    "fleet": fleet.measure,
    "stage_delay": stage_delay.measure,
    "signal": signal.measure,
    "signal_real": signal_real.measure,
    "handoff": handoff.measure,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sections", nargs="*", choices=[*SECTIONS, []], default=[])
    args = parser.parse_args()
    chosen = args.sections or list(SECTIONS)
    failed, not_run = [], []
    for name in chosen:
        start = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            figures = SECTIONS[name]()
        except (TemplateError, RecordingError) as exc:
            # A fresh clone has no packaged functions or downloaded recordings yet: say
            # what to build, in one line, and run the other sections.
            print(f"== {name}: not run: {exc}", flush=True)
            not_run.append(name)
            continue
        figures["seconds"] = round(time.monotonic() - start, 1)
        path = write_result(name, figures)
        print(f"== {name}: {figures['seconds']} s -> {path}", flush=True)
        if figures.get("meets_goal") is False:
            failed.append(name)
    rewrite_readme()
    if failed:
        print(f"goals not reached: {', '.join(failed)} (shown as such in the README)")
    if not_run:
        print(f"not run: {', '.join(not_run)} (see above for what each needs)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
