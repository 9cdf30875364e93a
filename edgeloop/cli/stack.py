"""`--stack NAME`: the names a command needs, read from the deployed stack's outputs.

Every command that reads a table or a bucket takes its name three ways, first
found wins: the explicit option (`--table`, `--bucket`), the stack's output
(`--stack`), then the environment (`EDGELOOP_FLEET_TABLE`, ..., `EDGELOOP_STACK`).
The output keys are infra/stack.py's CfnOutputs (tests/infrastructure checks that
every key named here is one).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

from edgeloop.cli.aws import aws_errors
from edgeloop.cli.errors import EXIT_FAILED, CliError

STACK_ENV = "EDGELOOP_STACK"

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
    if getattr(args, "stack", None):
        return outputs_of(args)[output]
    if os.environ.get(env):
        return os.environ[env]
    if os.environ.get(STACK_ENV):
        return outputs_of(args)[output]
    raise CliError(
        f"which {what}? pass --{option}, or --stack NAME (its {output} output), "
        f"or set {env} or {STACK_ENV}"
    )


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
