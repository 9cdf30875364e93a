"""`edgeloop demo`: the whole loop on one machine, reported as it happens."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from edgeloop.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, CliError
from edgeloop.cli.quiet import quiet_interpreter


def run(args: argparse.Namespace) -> int:
    from edgeloop.demo.live import LiveView
    from edgeloop.demo.run import DemoOptions, run_demo
    from edgeloop.demo.state import DemoFailed

    if not 1 <= args.devices <= 50:
        raise CliError("--devices must be between 1 and 50")
    quiet_interpreter()
    options = DemoOptions(
        scenario=args.scenario,
        devices=args.devices,
        out=Path(args.out),
        broker_url=args.broker,
        handoff=args.handoff,
    )
    view = LiveView(enabled=False if args.no_live else None)
    try:
        report = run_demo(options, on_change=view.update)
    except KeyboardInterrupt:
        view.close()
        print("\nstopped: the local cloud, broker and devices were shut down", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DemoFailed as exc:
        view.close()
        raise CliError(f"demo failed: {exc}", "demo_failed", EXIT_FAILED) from exc
    view.close()
    if args.picture:
        shutil.copyfile(options.out / "report.png", args.picture)
    from edgeloop.demo.report import quality_lines, update_lines

    final = report["final_version"]
    where = f"every device on v{final}" if final else "no model was promoted"
    print(f"\n{report['scenario']}: {where} after {report['elapsed_seconds']} s")
    for line in [*update_lines(report), *quality_lines(report["quality"])]:
        print(f"  {line}")
    print(
        f"report: {options.out}/report.md, report.json, report.png"
        + (f" (picture copied to {args.picture})" if args.picture else "")
    )
    return 0
