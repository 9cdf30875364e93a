"""`edgeloop local up | status`: the local cloud for your own devices, and what it is doing.

`up` starts the same handlers Lambda runs, against moto, an MQTT broker and a
CDN stand-in on loopback, with the model configs in a directory. It writes
what an agent needs (the trust file and a ready agent.toml) and a state file,
`local.json`, that `status` reads to find the running cloud.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeloop.cli.aws import aws_errors
from edgeloop.cli.dashboard import add_port_option
from edgeloop.cli.dashboard import start as start_dashboard
from edgeloop.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, CliError, emit
from edgeloop.cli.fleet import SHORT_COLUMNS, cell, fleet_overview, table_lines
from edgeloop.cli.quiet import quiet_interpreter
from edgeloop.cli.stack import LOCAL_DIR, LOCAL_STATE, process_alive, read_local

if TYPE_CHECKING:
    from edgeloop.factory.config import ModelConfig
    from edgeloop.local.provisioning import LocalProvisioning
    from edgeloop.local.runtime import LocalRuntime

DEFAULT_DIR = str(LOCAL_DIR)
STATE_FILE = LOCAL_STATE
REGION = "eu-west-1"


def load_model_dir(directory: Path) -> dict[str, tuple[str, ModelConfig]]:
    """Every *.toml under `directory`, checked now so a typo stops `up` with the key named."""
    from edgeloop.factory.config import load_config

    if not directory.is_dir():
        raise CliError(f"--models {directory}: no such directory of model configs (*.toml)")
    found: dict[str, tuple[str, ModelConfig]] = {}
    for path in sorted(directory.glob("*.toml")):
        config = load_config(path)
        if config.model.name in found:
            raise CliError(f"{path}: a second config for model {config.model.name!r}")
        found[config.model.name] = (path.read_text(encoding="utf-8"), config)
    if not found:
        raise CliError(f"--models {directory}: no model configs (*.toml) there")
    return found


@dataclass(frozen=True)
class ClaimBundle:
    """What every device of a batch leaves the factory with: the broker's CA, the claim
    certificate and its key, and the provisioning template's name."""

    ca: Path
    cert: Path
    key: Path
    template: str


def agent_toml(
    thing: str,
    config: ModelConfig,
    broker_url: str,
    cdn_url: str,
    trust: Path,
    state: Path,
    claim: ClaimBundle | None = None,
) -> str:
    """An agent config for this local cloud; every key is one `edgeloop-agent run` checks.

    With a claim bundle the device provisions itself: `thing` is only the serial it
    registers with when started without `--serial`, and the cloud tells it its model.
    """
    if claim is None:
        device = f'thing = "{thing}"\nmodel = "{config.model.name}"\n'
        tls = ""
        provisioning = ""
        run = "edgeloop-agent run --config THIS"
    else:
        device = ""
        tls = f'ca = "{claim.ca}"\n'
        provisioning = f"""
[provisioning]
# The batch's claim: the agent makes its own key and certificate with it once, and
# keeps them in its state directory. Another device: --serial SN --state DIR.
claim_cert = "{claim.cert}"
claim_key = "{claim.key}"
template = "{claim.template}"
serial = "{thing}"
"""
        run = "edgeloop-agent run --config THIS [--serial SN --state DIR]"
    return f"""# Written by `edgeloop local up` for the local cloud it started; starting it again
# on the same --out keeps the same URLs and root. Feed samples as JSON lines on stdin:
#   edgeloop feed YOUR.csv --config {config.model.name}.toml | {run}
status_interval = 2.0

[device]
{device}n_features = {config.model.n_features}

[broker]
url = "{broker_url}"
{tls}reconnect_min = 0.2
reconnect_max = 5.0
# This local broker publishes no lifecycle events: the agent's own stand in for them.
presence_will = true

[artifacts]
base_url = "{cdn_url}"

[trust]
root = "{trust}"     # the local root; a fleet's comes from `edgeloop trust init`
min_refresh_seconds = 1.0

[state]
dir = "{state}"

[source]
kind = "stdin"
rate = 0.0           # score lines as fast as they come

[upload]
batch_rows = 100
sample_rate = 0.05   # once a model runs: this share of samples, plus every alarm
retry_seconds = 1.0
{provisioning}"""


def _keep_edits(agent: Path, generated: str) -> None:
    """Write agent.toml, unless the user's edits (a sample rate, a batch size) are in it:
    then the generated one goes beside it, and one line says so."""
    if agent.is_file() and agent.read_text(encoding="utf-8") != generated:
        beside = agent.with_name("agent.toml.generated")
        beside.write_text(generated, encoding="utf-8")
        print(
            f"kept {agent} as it is (edited since it was written); what this start would "
            f"write is in {beside}: merge it if the cloud's addresses changed",
            file=sys.stderr,
            flush=True,
        )
        return
    agent.write_text(generated, encoding="utf-8")


def claim_bundle(cloud: LocalRuntime, out: Path) -> ClaimBundle | None:
    """The local cloud's claim bundle, copied where devices read it (never the CA's key)."""

    if cloud.provisioning is None or cloud.ca is None or cloud.claim is None:
        return None
    directory = out / "claim"
    directory.mkdir(parents=True, exist_ok=True)
    bundle = ClaimBundle(
        directory / "ca.pem",
        directory / "claim.pem",
        directory / "claim.key",
        cloud.provisioning.template_name,
    )
    shutil.copyfile(cloud.ca.cert_path, bundle.ca)
    shutil.copyfile(cloud.claim.cert, bundle.cert)
    shutil.copyfile(cloud.claim.key, bundle.key)
    bundle.key.chmod(0o600)
    return bundle


NOT_ENFORCED = (
    "identity is NOT enforced: mosquitto is not installed (or --broker was given), so any "
    "client may publish or subscribe as any device and devices are enrolled by hand; "
    "install mosquitto (apt-get install mosquitto) for the local IoT Core"
)


@dataclass
class _Watch:
    """What `up` has already told the user, so each run, rollout step and device is told once."""

    runs: set[str] = field(default_factory=set)
    rollouts: dict[str, tuple[int, str]] = field(default_factory=dict)
    devices: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    errors: int = 0
    onboarded: int = 0
    refused: int = 0


def _say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {message}", flush=True)


def _run_line(model: str, run: dict[str, Any]) -> str:
    metrics = ", ".join(
        f"{k} {v:.4f}" for k, v in (run.get("metrics") or {}).items() if k != "holdout_rows"
    )
    result = f" → v{run['version']}" if run.get("version") else ""
    rows = f" on {run['rows']} rows" if run.get("rows") else ""
    return f"{model}: training run {run['decision']}{rows}{result}: {run.get('reason', '')}" + (
        f" ({metrics})" if metrics else ""
    )


def _watch_once(cloud: LocalRuntime, models: list[str], seen: _Watch) -> None:
    from functions.common.fleet import FleetTable
    from functions.common.registry import Registry

    registry = Registry(cloud.client("dynamodb"), cloud.resources.registry_table)
    fleet = FleetTable(cloud.client("dynamodb"), cloud.resources.fleet_table)
    for model in models:
        for run in reversed(registry.runs(model, limit=20)):
            if run["run_id"] not in seen.runs:
                seen.runs.add(run["run_id"])
                _say(_run_line(model, run))
        rollout = registry.rollout(model)
        if rollout is not None:
            now = (int(rollout["version"]), f"{rollout['state']} at stage {rollout.get('stage')}")
            if seen.rollouts.get(model) != now:
                seen.rollouts[model] = now
                reason = f": {rollout['reason']}" if rollout.get("reason") else ""
                _say(f"{model}: v{now[0]} rollout {now[1]}{reason}")
        for device in fleet.for_model(model):
            report = device.report
            now_device = (report.version, report.health)
            if seen.devices.get(device.thing) != now_device:
                seen.devices[device.thing] = now_device
                _say(
                    f"{model}: device {device.thing} runs "
                    f"{'v' + str(report.version) if report.version else 'no model yet'} "
                    f"({report.health})"
                )


def handoff_env(above: int | None) -> dict[str, str]:
    """The retrain function's setting that `--handoff-above` changes."""
    from edgeloop.local.runtime import handoff_above

    if above is None:
        return {}
    if above < 1:
        raise CliError(f"--handoff-above {above}: give a positive number of bytes", "usage")
    return handoff_above(above)


def _up(args: argparse.Namespace) -> int:
    import warnings

    from botocore.exceptions import BotoCoreError, ClientError

    from edgeloop.local.runtime import LocalRuntime, is_loopback, state_dir_problem

    models = load_model_dir(Path(args.models))
    model = args.model or (next(iter(models)) if len(models) == 1 else None)
    if model is None:
        raise CliError(f"--model: which one of {', '.join(models)} is agent.toml for?")
    if model not in models:
        raise CliError(f"--model {model}: not one of {', '.join(models)} (in {args.models})")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / STATE_FILE
    if state_file.is_file() and process_alive(json.loads(state_file.read_text()).get("pid")):
        raise CliError(f"a local cloud is already running for {out} (see {state_file})", "running")
    # Powertools warns when a handler publishes no metrics; locally nobody reads them.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    quiet_interpreter()
    stopping = threading.Event()
    received: list[int] = []

    def stop(signum: int, _: object) -> None:
        received.append(signum)
        stopping.set()

    problem = state_dir_problem(out / "cloud")
    if problem is not None:
        raise CliError(problem, "state", EXIT_FAILED)
    identity = args.broker is None and shutil.which("mosquitto") is not None
    if not is_loopback(args.host) and not identity:
        raise CliError(
            f"--host {args.host}: devices on the network need the broker's TLS with client "
            "certificates; install mosquitto (apt-get install mosquitto) and give no --broker",
            "usage",
        )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    if not identity:
        print(f"warning: {NOT_ENFORCED}", file=sys.stderr, flush=True)
    with LocalRuntime(
        {name: text for name, (text, _) in models.items()},
        broker_url=args.broker,
        batching_window=args.batching_window,
        env=handoff_env(args.handoff_above),
        identity=identity,
        ca_dir=out / "ca",
        # Everything the cloud keeps between starts lives in --out.
        state_dir=out / "cloud",
        host=args.host,
        broker_port=args.port,
    ) as cloud:
        trust = out / "root.json"
        trust.write_bytes(cloud.trust_root)
        claim = claim_bundle(cloud, out)
        if claim is None:
            # The local thing registry knows the device, as IoT Core would after
            # enrolment by hand: its model, and that it is a named canary (the first
            # stage of every rollout), so it is offered each new version at once.
            cloud.enroll(args.thing, model, canary=True)
        else:
            # The device onboards itself: the platform team only admits its serial.
            admissions = cloud.admissions()
            admissions.allow(args.thing, model, canary=True)
            for pattern in args.admit:
                admissions.allow_pattern(pattern, model)
        agent = out / "agent.toml"
        generated = agent_toml(
            args.thing,
            models[model][1],
            cloud.broker_url,
            cloud.cdn.base_url,
            trust,
            out / "devices" / args.thing,
            claim,
        )
        _keep_edits(agent, generated)
        state = {
            "pid": os.getpid(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "aws_endpoint": cloud.aws.endpoint,
            "region": REGION,
            # The local AWS authorizes every request (IAM on); this is the local
            # platform team's key, valid only for this moto server.
            "credentials": cloud.aws.credentials,
            "broker_url": cloud.broker_url,
            "cdn_base_url": cloud.cdn.base_url,
            "trust_file": str(trust),
            "agent_config": str(agent),
            "models": sorted(models),
            "model_configs": str(Path(args.models).resolve()),
            "registry_table": cloud.resources.registry_table,
            "fleet_table": cloud.resources.fleet_table,
            "presence_table": cloud.resources.presence_table,
            "admission_table": cloud.resources.admission_table,
            "identity_enforced": identity,
            # Started again on a directory an earlier run left: its state continued.
            "resumed": cloud.stack.attached,
            "claim": None if claim is None else str(claim.cert.parent),
            "data_bucket": cloud.resources.data_bucket,
            "artifact_bucket": cloud.resources.artifact_bucket,
        }
        dashboard = start_dashboard(
            lambda: local_status(state), f"local cloud in {out}", args.dashboard_port
        )
        state["dashboard_url"] = dashboard.url if dashboard else None
        state_file.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        try:
            _announce(state, models, args)
            seen = _Watch()
            while not stopping.wait(1.0):
                try:
                    _watch_once(cloud, sorted(models), seen)
                except (BotoCoreError, ClientError) as exc:
                    # The log is a courtesy; a hiccup reading it must not stop the cloud.
                    _say(f"(could not read the registry: {type(exc).__name__}: {exc})")
                for error in cloud.router.errors[seen.errors :]:
                    _say(f"error in a handler: {error}")
                seen.errors = len(cloud.router.errors)
                if cloud.provisioning is not None:
                    _watch_provisioning(cloud.provisioning, seen)
        finally:
            if dashboard:
                dashboard.stop()
            state_file.unlink(missing_ok=True)
    print("stopped: the local cloud, its broker and CDN were shut down", file=sys.stderr)
    return EXIT_INTERRUPTED if signal.SIGINT in received else 0


def _watch_provisioning(provisioning: LocalProvisioning, seen: _Watch) -> None:
    for thing in provisioning.registered[seen.onboarded :]:
        _say(f"device {thing} onboarded itself (provisioning by claim)")
    seen.onboarded = len(provisioning.registered)
    for refusal in provisioning.refusals[seen.refused :]:
        _say(f"refused a device: {refusal}")
    seen.refused = len(provisioning.refusals)


def _no_dashboard(port: int) -> str:
    if port == 0:
        return "none (--dashboard-port 0)"
    return f"none: port {port} is taken (see the warning above; --dashboard-port N)"


def _announce(
    state: dict[str, Any], models: dict[str, tuple[str, ModelConfig]], args: argparse.Namespace
) -> None:
    if args.json:
        emit(state)
        sys.stdout.flush()
        return
    from edgeloop.local.router import PRESENCE_EMULATED

    kinds = ", ".join(
        f"{name} ({c.model.kind}, {c.model.n_features} features)" for name, (_, c) in models.items()
    )
    print(
        (
            f"local cloud up, continuing the one kept in {Path(state['agent_config']).parent}"
            if state.get("resumed")
            else "local cloud up"
        )
        + "; Ctrl-C stops it (its state stays in the same directory for the next start)\n"
        f"  broker (MQTT)   {state['broker_url']}\n"
        f"  CDN base URL    {state['cdn_base_url']}\n"
        f"  trust file      {state['trust_file']}\n"
        f"  models          {kinds}\n"
        f"  agent config    {state['agent_config']} (thing {args.thing})\n"
        f"  local AWS       {state['aws_endpoint']} (moto)\n"
        f"run a device:     edgeloop feed YOUR.csv --config MODEL.toml | "
        f"edgeloop-agent run --config {state['agent_config']}\n"
        f"see what it does: edgeloop local status --dir {Path(state['agent_config']).parent}\n"
        f"dashboard:        {state['dashboard_url'] or _no_dashboard(args.dashboard_port)}\n"
        f"presence:         {PRESENCE_EMULATED}\n"
        + (
            f"identity:         enforced by the broker; claim bundle in {state['claim']}\n"
            f"another device:   edgeloop-agent run --config {state['agent_config']} "
            "--serial SERIAL --state DIR (serials matching --admit REGEX onboard themselves)"
            if state["claim"]
            else f"identity:         {NOT_ENFORCED}"
        ),
        flush=True,
    )


def read_state(directory: Path) -> dict[str, Any]:
    return read_local(directory, "--dir")


def local_status(state: dict[str, Any]) -> dict[str, Any]:
    """Runs, versions, rollouts and devices of every model, read from the running local cloud."""
    import boto3

    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=state["aws_endpoint"],
        region_name=state["region"],
        **state["credentials"],
    )
    with aws_errors(f"the local cloud at {state['aws_endpoint']}"):
        # A state file written before presence existed names no table: no presence shown.
        models = fleet_overview(
            dynamodb,
            state["registry_table"],
            state["fleet_table"],
            state.get("presence_table"),
            state["models"],
        )
    return {"local_cloud": state, "models": models}


def _status(args: argparse.Namespace) -> int:
    doc = local_status(read_state(Path(args.dir).resolve()))
    if args.json:
        emit(doc)
        return 0
    state = doc["local_cloud"]
    print(
        f"local cloud (pid {state['pid']}, since {state['started_at']}): "
        f"broker {state['broker_url']}, CDN {state['cdn_base_url']}"
    )
    for model, m in doc["models"].items():
        print(f"\n{model}: champion {'v' + str(m['champion']) if m['champion'] else 'none yet'}")
        runs = [
            [
                cell(r.get("at")),
                r["decision"],
                cell(r.get("rows")),
                "v" + str(r["version"]) if r.get("version") else "-",
                r.get("reason", ""),
            ]
            for r in m["runs"]
        ]
        print("runs (newest first):")
        for line in table_lines(("at", "decision", "rows", "version", "reason"), runs):
            print("  " + line)
        if not runs:
            print("  (none yet: runs start when devices upload data)")
        versions = [
            [
                f"v{v['version']}",
                cell(v.get("size")),
                cell(v.get("compressed_full_size")),
                ", ".join(f"from v{d['from_version']} {d['size']} B" for d in v.get("deltas", []))
                or "-",
            ]
            for v in m["versions"]
        ]
        if versions:
            print("versions:")
            for line in table_lines(("version", "bytes", "compressed", "patches"), versions):
                print("  " + line)
        rollout = m["rollout"]
        if rollout:
            stage = rollout.get("stage", "?")
            print(
                f"rollout: v{rollout['version']} {rollout['state']} at stage {stage} "
                f"(since {rollout.get('started_at', '?')})"
                + (f": {rollout['reason']}" if rollout.get("reason") else "")
            )
        devices = [[cell(d[c]) for c in SHORT_COLUMNS] for d in m["devices"]]
        print("devices:")
        for line in table_lines(SHORT_COLUMNS, devices):
            print("  " + line)
        if not devices:
            print("  (no device has reported yet)")
    return 0


def register(sub: Any, json_help: str) -> None:
    p = sub.add_parser(
        "local",
        help="run the local cloud for your own devices (`local up`), and see it (`local status`)",
        description="The cloud side on this machine, no AWS account: moto as AWS, an MQTT "
        "broker, a CDN stand-in and the same handlers Lambda runs.",
    )
    actions = p.add_subparsers(dest="local_command", required=True, metavar="ACTION")
    up = actions.add_parser(
        "up",
        help="start the local cloud with your model configs and run until Ctrl-C",
        description="Prints what an agent needs (broker URL, CDN base URL, trust file), writes "
        "a ready agent.toml and local.json into --out, and logs training runs, rollouts and "
        "devices as they happen. The cloud's state is kept in --out: started again there, it "
        "continues where it stopped, on the same ports and root.",
    )
    up.add_argument("--models", required=True, help="directory of model configs (*.toml)")
    up.add_argument(
        "--model", default=None, help="the model agent.toml is for (default: the only one)"
    )
    up.add_argument(
        "--thing",
        default="device-1",
        help="the serial (thing name) in agent.toml, admitted as a named canary "
        "(default: %(default)s)",
    )
    up.add_argument(
        "--admit",
        action="append",
        default=[],
        metavar="REGEX",
        help="admit every serial matching REGEX (a full match) to --model: devices with the "
        "claim bundle and such a serial onboard themselves (repeatable; the --thing serial "
        "is always admitted, as a named canary)",
    )
    up.add_argument(
        "--out",
        default=DEFAULT_DIR,
        help="where agent.toml, the trust file, local.json and device state go "
        "(default: %(default)s)",
    )
    up.add_argument(
        "--broker",
        default=None,
        help="mqtt://host:port of a broker to use (e.g. mosquitto) instead of the embedded one",
    )
    up.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address devices reach the broker and the CDN at (default: %(default)s); "
        "another host (a LAN address, or 0.0.0.0 for every address) needs mosquitto: devices "
        "on the network connect with TLS and client certificates only",
    )
    up.add_argument(
        "--port",
        type=int,
        default=None,
        help="the broker's port for devices (default: chosen on the first start in --out, "
        "then kept)",
    )
    up.add_argument(
        "--batching-window",
        type=float,
        default=2.0,
        help="seconds uploads are gathered before one training run, like the SQS batching "
        "window (default: %(default)s)",
    )
    up.add_argument(
        "--handoff-above",
        type=int,
        default=None,
        metavar="BYTES",
        help="hand every run whose estimated memory is above BYTES to a training job (run "
        "here as a process over a temporary /opt/ml), as a run too large for Lambda is "
        "handed to SageMaker; 1 forces every run through it (default: the stack's limits)",
    )
    add_port_option(up, zero_disables=True)
    up.add_argument(
        "--json", action="store_true", help="print the connection details as one JSON object"
    )
    up.set_defaults(run=_up)

    st = actions.add_parser(
        "status", help="runs, versions, rollouts and devices of the running local cloud"
    )
    st.add_argument(
        "--dir",
        default=DEFAULT_DIR,
        help="the --out directory of `local up` (default: %(default)s)",
    )
    st.add_argument("--json", action="store_true", help=json_help)
    st.set_defaults(run=_status)
