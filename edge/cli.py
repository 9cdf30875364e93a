"""`edgeloop-agent`: the device agent's command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from edge.errors import ProvisioningFailed, UpdateError
from edgeloop.contract import ContractError

if TYPE_CHECKING:
    from edge.config import AgentConfig


def _check(args: argparse.Namespace) -> int:
    """What a device with this config would be offered, from a fresh copy of its trust
    anchor: the agent's own refresh, in a temporary directory, installing nothing."""
    import tempfile

    from edge.config import load_agent_config
    from edge.download import HttpFetcher
    from edge.provision import provisioned
    from edge.trust import SignedRepository, TrustLimits
    from edgeloop.contract.trust_targets import REPOSITORY_PREFIX

    config = provisioned(load_agent_config(args.config))
    thing = args.thing or config.device.thing
    http = HttpFetcher(
        config.artifacts.base_url + REPOSITORY_PREFIX,
        config.artifacts.timeout,
        config.artifacts.retries,
        user_agent="edgeloop-agent-check",
    )
    with tempfile.TemporaryDirectory(prefix="edgeloop-check-") as scratch:
        repo = SignedRepository(
            http,
            config.trust.root.read_bytes(),
            Path(scratch),
            limits=TrustLimits(min_refresh_seconds=0.0),
        )
        try:
            offer = repo.refresh(config.device.model, thing, None)
        except UpdateError as exc:
            print(json.dumps({"thing": thing, "model": config.device.model, "refused": exc.reason}))
            return 1
    pointer = offer.pointer
    doc = {
        "thing": thing,
        "model": config.device.model,
        "offered": offer.version,
        "rollout": None if pointer is None else pointer.to_json(),
        "model_bytes": offer.model.length if offer.model else None,
        "compressed_bytes": {e: t.length for e, t in offer.compressed.items()},
        "metadata_bytes": repo.bytes_received,
    }
    print(json.dumps(doc))
    return 0


# Cloud SDKs securesystemslib imports, if installed, for signers the agent never uses.
_SIGNING_SDKS = ("boto3", "botocore")


def _run(args: argparse.Namespace) -> int:
    import signal

    from edge.allocator import cap_malloc_arenas

    # Before any import that starts a thread (NumPy's OpenBLAS starts one).
    cap_malloc_arenas()
    # securesystemslib (under python-tuf) imports the SDK of every cloud signer it finds
    # installed; the agent only verifies. Where the cloud extras sit beside it, boto3
    # alone cost 10 MB resident (`make bench`, agent_footprint). `run` owns its
    # process until it exits, so nothing else here wants them.
    for sdk in _SIGNING_SDKS:
        sys.modules.setdefault(sdk, None)  # type: ignore[arg-type]
    from edge.agent import Agent
    from edge.config import load_agent_config

    configure_logging(args.log_level)
    config = load_agent_config(args.config)
    if args.state is not None:
        config = replace(config, state=replace(config.state, dir=Path(args.state)))
    config = identity_of(config, args.serial)
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


def identity_of(config: AgentConfig, serial: str | None) -> AgentConfig:
    """The config as the thing this device is: a device with a claim and no identity
    yet provisions itself first."""
    if config.provisioning is None:
        # Provisioning needs cryptography's X.509 builders: with edge.provision about
        # 1 MB resident that a device enrolled by hand would carry for nothing (the
        # agent_footprint bench's agent, with them and without).
        return config
    from edge.provision import ensure_identity

    return ensure_identity(config, serial)


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


# The device's distribution (packaging/agent/pyproject.toml); the operator's depends on it.
DISTRIBUTION = "edgeloop-agent"


def installed_version() -> str:
    """The installed edgeloop-agent's version, or the source tree's when it is not installed."""
    # Imported here: importlib.metadata and its zipfile stay out of `run`'s resident set.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        from edgeloop import __version__

        return f"{__version__} (source tree, {DISTRIBUTION} not installed)"


class _Version(argparse.Action):
    """argparse's "version" action, with the version looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(f"{parser.prog} {installed_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeloop-agent",
        description="Device agent: refreshes the fleet's signed metadata, fetches and hot-swaps "
        "models, scores locally.",
    )
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the agent with a config file")
    p.add_argument("--config", required=True, help="agent.toml")
    p.add_argument(
        "--serial",
        default=None,
        help="this device's serial, for provisioning by claim (else EDGELOOP_SERIAL, "
        "else provisioning.serial)",
    )
    p.add_argument(
        "--state",
        default=None,
        help="the state directory, instead of the config's state.dir (for one config "
        "shared by several devices on one machine)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="info: one line per lifecycle event (never per sample); debug adds every step",
    )
    p.set_defaults(run=_run)

    p = sub.add_parser(
        "check",
        help="refresh the signed metadata from the config's root and say what this device "
        "is offered (installs nothing, keeps no state)",
    )
    p.add_argument("--config", required=True, help="agent.toml")
    p.add_argument("--thing", default=None, help="ask for another thing name than the config's")
    p.set_defaults(run=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ProvisioningFailed as exc:
        print(f"edgeloop-agent: provisioning failed: {exc}", file=sys.stderr)
        return 4
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
