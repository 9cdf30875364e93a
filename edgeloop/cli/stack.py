"""`--stack NAME`: the names a command needs, read from the deployed stack's outputs.

Every command that reads a table or a bucket takes its name these ways, first
found wins: the explicit option (`--table`, `--bucket`), a running local cloud
(`--local DIR`: its local.json), the stack's output (`--stack`), then the
environment (`EDGELOOP_FLEET_TABLE`, ..., `EDGELOOP_STACK`), and last the local
cloud in `.edgeloop/local` when one is running there. The local cloud also gives
the endpoint and the credentials, so a command against it needs no plumbing.
The output keys are infra/stack.py's CfnOutputs (tests/infrastructure checks that
every key named here is one).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.cli.aws import aws_errors
from edgeloop.cli.errors import EXIT_FAILED, CliError

STACK_ENV = "EDGELOOP_STACK"
# Where `edgeloop local up` keeps its local.json when given no --out.
LOCAL_DIR = Path(".edgeloop/local")
LOCAL_STATE = "local.json"

CDN_BASE_URL = "CdnBaseUrl"
ONLINE_KEY_ARN = "OnlineKeyArn"
ARTIFACT_BUCKET = "ArtifactBucket"
DEVICE_POLICY_NAME = "DevicePolicyName"
CANARY_GROUP = "CanaryGroup"
STATUS_RULE = "StatusRule"
UPLOAD_REQUEST_RULE = "UploadRequestRule"
FLEET_TABLE = "FleetTable"
PRESENCE_TABLE = "PresenceTable"
REGISTRY_TABLE = "RegistryTable"
DATA_BUCKET = "DataBucket"
ADMISSION_TABLE = "AdmissionTable"
PROVISIONING_TEMPLATE = "ProvisioningTemplateName"
CLAIM_POLICY = "ClaimPolicyName"
# The stack outputs a local cloud's local.json names, by its key there.
LOCAL_KEYS = {
    FLEET_TABLE: "fleet_table",
    PRESENCE_TABLE: "presence_table",
    REGISTRY_TABLE: "registry_table",
    ADMISSION_TABLE: "admission_table",
    DATA_BUCKET: "data_bucket",
    ARTIFACT_BUCKET: "artifact_bucket",
}
# What the command line and `device config` read; the stack has more outputs.
READ_OUTPUTS = (
    CDN_BASE_URL,
    ONLINE_KEY_ARN,
    ARTIFACT_BUCKET,
    DEVICE_POLICY_NAME,
    CANARY_GROUP,
    STATUS_RULE,
    UPLOAD_REQUEST_RULE,
    FLEET_TABLE,
    PRESENCE_TABLE,
    REGISTRY_TABLE,
    DATA_BUCKET,
    ADMISSION_TABLE,
)


@dataclass(frozen=True)
class StackOutputs:
    """One deployed stack's outputs, by key."""

    stack: str
    values: dict[str, str]

    def __getitem__(self, key: str) -> str:
        try:
            return self.values[key]
        except KeyError:
            raise CliError(
                f"stack {self.stack} has no output {key}: it was deployed from an older "
                "edgeloop; deploy this version (cdk deploy) or pass the name by hand",
                "stack_output_missing",
                EXIT_FAILED,
            ) from None


def read_outputs(stack: str, endpoint_url: str | None = None) -> StackOutputs:
    """The outputs of `stack` from CloudFormation (`describe_stacks`)."""
    import boto3
    from botocore.exceptions import ClientError

    with aws_errors(f"stack {stack}"):
        cloudformation = boto3.client("cloudformation", endpoint_url=endpoint_url)
        try:
            [found] = cloudformation.describe_stacks(StackName=stack)["Stacks"]
        except ClientError as exc:
            # CloudFormation says a missing stack with a ValidationError.
            if "does not exist" not in str(exc.response.get("Error", {}).get("Message", "")):
                raise
            raise CliError(
                f"stack {stack} does not exist in this account and region: check --stack "
                f"(or ${STACK_ENV}) and AWS_DEFAULT_REGION",
                "stack_not_found",
                EXIT_FAILED,
            ) from exc
    return StackOutputs(
        stack,
        {str(o["OutputKey"]): str(o["OutputValue"]) for o in found.get("Outputs", [])},
    )


def add_stack_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stack",
        default=None,
        help=f"read names from this deployed stack's outputs (default: ${STACK_ENV})",
    )


def add_local_option(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    parser.add_argument(
        "--local",
        default=argparse.SUPPRESS if suppress else None,
        metavar="DIR",
        help="the local cloud `edgeloop local up --out DIR` runs: its tables, endpoint and "
        f"credentials (default when nothing else is named: {LOCAL_DIR}, if one runs there)",
    )


def process_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_local(directory: Path, option: str = "--local") -> dict[str, Any]:
    """The local.json of the local cloud running for `directory`, or one line saying why not
    (naming the command's `option` that gave the directory)."""
    path = directory / LOCAL_STATE
    if not path.is_file():
        raise CliError(
            f"{option} {directory}: no local cloud is running there (no {LOCAL_STATE}); start "
            f"one with `edgeloop local up --models DIR --out {directory}`",
            "not_running",
            EXIT_FAILED,
        )
    state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if not process_alive(state.get("pid")):
        raise CliError(
            f"{option} {directory}: the local cloud that wrote {path} has stopped; start it "
            f"again with `edgeloop local up --models DIR --out {directory}`",
            "not_running",
            EXIT_FAILED,
        )
    return state


def local_cloud(args: argparse.Namespace, fallback: bool = False) -> dict[str, Any] | None:
    """The local cloud the command talks to: `--local DIR`'s, else (with `fallback`, when
    nothing else names the resources) the one running in .edgeloop/local, else None."""
    cached: Any = getattr(args, "_local_cloud", None)
    if isinstance(cached, dict):
        return cached
    directory = getattr(args, "local", None)
    if directory:
        state = read_local(Path(directory))
    elif fallback and not getattr(args, "endpoint_url", None) and stack_name(args) is None:
        try:
            state = read_local(LOCAL_DIR)
        except CliError:
            return None
    else:
        return None
    args._local_cloud = state
    return state


def aws_client(args: argparse.Namespace, service: str) -> Any:
    """A client for `service`: the local cloud's endpoint and credentials when the
    command's names came from one, else AWS's (or `--endpoint-url`) from the environment."""
    import boto3

    state = local_cloud(args)
    if state is not None:
        return boto3.client(
            service,
            endpoint_url=state["aws_endpoint"],
            region_name=state["region"],
            **state["credentials"],
        )
    return boto3.client(service, endpoint_url=getattr(args, "endpoint_url", None))


def stack_name(args: argparse.Namespace) -> str | None:
    name: str | None = getattr(args, "stack", None) or os.environ.get(STACK_ENV) or None
    return name


def resolve(
    args: argparse.Namespace,
    *,
    option: str,
    output: str,
    env: str,
    what: str,
) -> str:
    """The name `what`: `--option`, else the stack's `output`, else `$env`, else `$EDGELOOP_STACK`.

    One line naming all three ways when none is given.
    """
    explicit = getattr(args, option.replace("-", "_"), None)
    if explicit:
        return str(explicit)
    if getattr(args, "local", None):
        return _from_local(local_cloud(args), output, what)
    if getattr(args, "stack", None):
        return outputs_of(args)[output]
    if os.environ.get(env):
        return os.environ[env]
    if os.environ.get(STACK_ENV):
        return outputs_of(args)[output]
    state = local_cloud(args, fallback=True)
    if state is not None:
        return _from_local(state, output, what)
    raise CliError(
        f"which {what}? pass --{option}, --local DIR (a running `edgeloop local up`), "
        f"or --stack NAME (its {output} output), or set {env} or {STACK_ENV}"
    )


def _from_local(state: dict[str, Any] | None, output: str, what: str) -> str:
    name = None if state is None else state.get(LOCAL_KEYS.get(output, ""))
    if not name:
        raise CliError(
            f"the local cloud names no {what}: it was started by an older edgeloop; "
            "stop it and run `edgeloop local up` again",
            "local_missing",
            EXIT_FAILED,
        )
    return str(name)


def outputs_of(args: argparse.Namespace) -> StackOutputs:
    """The outputs of the stack the command names, read once per command."""
    name = stack_name(args)
    if name is None:
        raise CliError(f"pass --stack NAME or set {STACK_ENV}")
    cached: Any = getattr(args, "_stack_outputs", None)
    if isinstance(cached, StackOutputs) and cached.stack == name:
        return cached
    outputs = read_outputs(name, getattr(args, "endpoint_url", None))
    args._stack_outputs = outputs
    return outputs
