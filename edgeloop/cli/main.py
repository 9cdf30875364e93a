"""`edgeloop`: the cloud side's command line (models, releases, trust, rollouts, local cloud)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from typing import NoReturn

from edgeloop import __version__
from edgeloop.cli import (
    dashboard,
    device,
    factory,
    feed,
    fleet,
    local,
    predict,
    recipe,
    release,
    rollout,
    trust,
)
from edgeloop.cli.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
    report,
)
from edgeloop.contract import ContractError
from edgeloop.local.stack_template import TemplateError

JSON_HELP = 'print one JSON object, errors included ({"error": ..., "code": ...})'
# What the `local` extra installs (pyproject.toml): the local cloud and the demo import
# them when they start, so an install without the extra says so instead of a traceback.
LOCAL_EXTRA_MODULES = frozenset({"moto", "amqtt", "rich", "matplotlib"})


def _local_extra_error(command: str, missing: str) -> CliError:
    return CliError(
        f"`edgeloop {command}` needs {missing}, which the local extra installs: "
        "pip install 'edgeloop[local]'",
        "missing_extra",
        EXIT_FAILED,
    )


def _check_local_extra(args: argparse.Namespace) -> None:
    """The demo and `local up` start moto's server and a broker in other processes,
    where a missing module would only show as a port that never opens: ask first."""
    if args.command == "local" and getattr(args, "local_command", None) == "up":
        command = "local up"
    elif args.command == "demo":
        command = "demo"
    else:
        return
    for module in sorted(LOCAL_EXTRA_MODULES):
        if importlib.util.find_spec(module) is None:
            raise _local_extra_error(command, module)


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so --json can answer usage errors in JSON."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(self, message)


class _UsageError(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


def _demo(args: argparse.Namespace) -> int:
    from edgeloop.cli.demo import run

    return run(args)


def _version_line() -> str:
    return f"edgeloop {__version__} (Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="edgeloop",
        description="Cloud side of edgeloop: train and release models, make patches, keep the "
        "fleet's keys and rollouts, run the local cloud and the demo.",
    )
    parser.add_argument(
        "--version", action="version", version=_version_line(), help="print the version and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    factory.register(sub, JSON_HELP)
    predict.register(sub)
    release.register(sub, JSON_HELP)
    fleet.register(sub, JSON_HELP)
    rollout.register(sub, JSON_HELP)
    local.register(sub, JSON_HELP)
    dashboard.register(sub)
    feed.register(sub)
    trust.register(sub, JSON_HELP)
    device.register(sub, JSON_HELP)
    recipe.register(sub)

    p = sub.add_parser("demo", help="the whole loop on one machine, no AWS account")
    p.add_argument(
        "--scenario",
        choices=("digits", "anomaly"),
        default="digits",
        help="digits: a classifier on handwritten digits; anomaly: k-means on vibration "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--devices",
        type=int,
        default=5,
        help="simulated devices, real agents, 1 to 50 (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        default="demo-report",
        help="where report.json, .md and .png go (default: %(default)s)",
    )
    p.add_argument(
        "--broker", default=None, help="mqtt://host:port of another broker (e.g. mosquitto)"
    )
    p.add_argument(
        "--no-live", action="store_true", help="plain log lines instead of the live view"
    )
    p.add_argument(
        "--handoff",
        action="store_true",
        help="train every run as a training job would run in SageMaker (the training entry "
        "point as a process over a temporary /opt/ml) instead of inside the retrain function",
    )
    p.add_argument(
        "--picture",
        default=None,
        help="also copy report.png here (`make demo` refreshes the README's)",
    )
    p.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        if as_json:
            return report(CliError(exc.message, "usage"), True)
        exc.parser.print_usage(sys.stderr)
        print(f"{exc.parser.prog}: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    as_json = bool(getattr(args, "json", False))
    try:
        _check_local_extra(args)
        code: int = args.run(args)
    except CliError as exc:
        return report(exc, as_json)
    except ContractError as exc:
        return report(CliError(f"{type(exc).__name__}: {exc}", "refused", EXIT_FAILED), as_json)
    except KeyboardInterrupt:
        return report(CliError("interrupted", "interrupted", EXIT_INTERRUPTED), as_json)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in LOCAL_EXTRA_MODULES:
            raise
        return report(_local_extra_error(args.command, missing), as_json)
    except TemplateError as exc:
        # The local cloud and the demo run the functions as built in a checkout.
        return report(
            CliError(
                f"{exc} (`edgeloop {args.command}` runs the functions as a checkout of this "
                "repository builds them)",
                "no_lambda_build",
                EXIT_FAILED,
            ),
            as_json,
        )
    except (OSError, ValueError) as exc:
        # ConfigError names the bad key; OSError names the file.
        return report(CliError(str(exc), _code(exc)), as_json)
    return code


def _code(exc: BaseException) -> str:
    name = type(exc).__name__
    return {"ConfigError": "bad_config", "FileNotFoundError": "no_such_file"}.get(name, "error")


if __name__ == "__main__":
    raise SystemExit(main())
