"""`edgeloop-agent`: the device agent's command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from edgeloop.contract import ContractError, TensorSpec, TrustedKeys, accept_manifest


def _verify(args: argparse.Namespace) -> int:
    trusted = TrustedKeys.from_pem(*(Path(k).read_bytes() for k in args.key))
    device_input = TensorSpec(shape=(-1, args.features)) if args.features is not None else None
    manifest = accept_manifest(
        Path(args.manifest).read_bytes(),
        trusted,
        installed_version=args.installed_version,
        device_input=device_input,
    )
    print(json.dumps({"model": manifest.model, "version": manifest.version, "accepted": True}))
    return 0


def _run(args: argparse.Namespace) -> int:
    import signal

    from edge.agent import Agent
    from edge.config import load_agent_config

    configure_logging(args.log_level)
    config = load_agent_config(args.config)
    agent = Agent(config)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: agent.supervisor.halted.set())
    # The first stdout line says what started, before any log line.
    agent.restore()
    print(
        json.dumps(
            {
                "thing": config.device.thing,
                "model": config.device.model,
                "version": agent.version,
                "broker": config.broker.url,
            }
        ),
        flush=True,
    )
    logging.getLogger("edge.agent").info(
        "event=started thing=%s model=%s version=%s broker=%s",
        config.device.thing,
        config.device.model,
        agent.version,
        config.broker.url,
    )
    agent.start()
    agent.supervisor.halted.wait()
    logging.getLogger("edge.agent").info("event=stopping reason=%r", agent.failure or "signal")
    agent.stop()
    if agent.failure is not None:
        # One line, for systemd's journal; systemd restarts the agent.
        print(f"edgeloop-agent: halted: {agent.failure}", file=sys.stderr, flush=True)
        return 3
    return 0


class KeyValueFormatter(logging.Formatter):
    """`level=info component=link event=connected ...`: one line, greppable, for journald."""

    def format(self, record: logging.LogRecord) -> str:
        component = record.name.rsplit(".", 1)[-1]
        line = f"level={record.levelname.lower()} component={component} {record.getMessage()}"
        if record.exc_info:
            # The traceback on the same record, its lines joined, so journald keeps them together.
            line += " traceback=" + repr(self.formatException(record.exc_info))
        return line


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger("edge")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeloop-agent",
        description="Device agent: verifies, fetches and hot-swaps models, scores locally.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('edgeloop')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the agent with a config file")
    p.add_argument("--config", required=True, help="agent.toml")
    p.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="info: one line per lifecycle event (never per sample); debug adds every step",
    )
    p.set_defaults(run=_run)

    p = sub.add_parser("verify", help="make every check the agent makes on a manifest")
    p.add_argument("manifest")
    p.add_argument("--key", action="append", required=True, help="pinned PEM public key")
    p.add_argument("--installed-version", type=int, default=None)
    p.add_argument("--features", type=int, default=None, help="features this device produces")
    p.set_defaults(run=_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ContractError as exc:
        print(f"refused: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        # AgentConfigError names the bad key; OSError names the file.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
