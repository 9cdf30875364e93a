"""`edgeloop device config | claim`: agent.toml for one enrolled thing, or the claim
bundle a whole batch of devices provisions itself with, for a deployed stack.

Everything in it comes from the account, not from hand-copied names: the IoT data
endpoint (ATS) from `iot describe-endpoint`, the CDN from the stack's CdnBaseUrl
output, the rule names from the stack's name (the agent derives them as the stack
does, and the StatusRule output is checked against that), the thing's model from
its registry attribute, and the trust anchor: root v1 from the artifact bucket
(`models/tuf/metadata/1.root.json`, which `edgeloop trust init` wrote), or the
ceremony's own copy with --root.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgeloop.cli.aws import aws_errors
from edgeloop.cli.errors import EXIT_FAILED, CliError, emit
from edgeloop.cli.stack import (
    ARTIFACT_BUCKET,
    CDN_BASE_URL,
    CLAIM_POLICY,
    PROVISIONING_TEMPLATE,
    STATUS_RULE,
    UPLOAD_REQUEST_RULE,
    StackOutputs,
    add_stack_option,
    outputs_of,
)
from edgeloop.files import write_private

ROOT_V1_KEY = "models/tuf/metadata/1.root.json"
ROOT_FILE = "root.json"
# AWS IoT Core's MQTT over TLS port; the ATS endpoint's server certificate chains to
# Amazon Root CA 1, the file the device keeps as `ca`.
IOT_PORT = 8883


def _thing_model(iot: Any, thing: str) -> str:
    from botocore.exceptions import ClientError

    from functions.common.identity import MODEL_ATTRIBUTE

    try:
        described = iot.describe_thing(thingName=thing)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        raise CliError(
            f"thing {thing} is not in this account's IoT registry: enrol it first "
            f"(a thing with the attribute {MODEL_ATTRIBUTE}=MODEL)",
            "unknown_thing",
            EXIT_FAILED,
        ) from exc
    model = described.get("attributes", {}).get(MODEL_ATTRIBUTE)
    if not model:
        raise CliError(
            f"thing {thing} has no {MODEL_ATTRIBUTE} attribute: the cloud serves it no "
            f"model until it has one (aws iot update-thing --thing-name {thing} "
            f'--attribute-payload \'{{"attributes": {{"{MODEL_ATTRIBUTE}": "MODEL"}}}}\')',
            "no_model",
            EXIT_FAILED,
        )
    return str(model)


def _root_v1(s3: Any, bucket: str) -> bytes:
    from botocore.exceptions import ClientError

    try:
        body: bytes = s3.get_object(Bucket=bucket, Key=ROOT_V1_KEY)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
            raise
        raise CliError(
            f"no root metadata at s3://{bucket}/{ROOT_V1_KEY}: run `edgeloop trust init "
            "--stack NAME` first (or pass --root with the ceremony's 1.root.json)",
            "no_root",
            EXIT_FAILED,
        ) from exc
    return body


def _checked_root(data: bytes, where: str) -> bytes:
    from tuf.api.metadata import Metadata, Root

    try:
        root = Metadata[Root].from_bytes(data)
    except Exception as exc:  # python-tuf raises its own and the JSON decoder's errors
        raise CliError(f"{where} is not TUF root metadata ({exc})", "bad_root") from exc
    if not isinstance(root.signed, Root):
        raise CliError(f"{where} holds {root.signed.type} metadata, not root", "bad_root")
    return data


def agent_toml(
    *,
    stack: str,
    thing: str,
    model: str,
    n_features: int,
    broker_url: str,
    cdn_url: str,
    ca: str,
    cert: str,
    key: str,
    state_dir: str,
    template: str | None = None,
) -> str:
    """The agent config for a deployed stack; every key is one `edgeloop-agent run` checks.

    With a provisioning `template`, `cert` and `key` are the batch's claim and the
    file names no thing and no model: the device learns both when it registers.
    """
    if template is None:
        header = f"""# Written by `edgeloop device config --stack {stack} --thing {thing}`.
# Paths are relative to this file. The certificate and key are the thing's own
# (from provisioning); the CA file is Amazon Root CA 1."""
        device = f"thing = {json.dumps(thing)}\nmodel = {json.dumps(model)}\n"
        tls = f"cert = {json.dumps(cert)}\nkey = {json.dumps(key)}\n"
        provisioning = ""
    else:
        header = f"""# Written by `edgeloop device claim --stack {stack}`: one file for a batch.
# Paths are relative to this file. Each device starts with its own serial
# (`edgeloop-agent run --config THIS --serial SN`, or EDGELOOP_SERIAL), makes its
# own key and certificate with the claim once, and keeps them in its state
# directory; the CA file is Amazon Root CA 1."""
        device = ""
        tls = ""
        provisioning = f"""
[provisioning]
claim_cert = {json.dumps(cert)}
claim_key = {json.dumps(key)}
template = {json.dumps(template)}
"""
    return f"""{header}
# Feed samples as JSON lines on stdin, or set [source] to a CSV file.

[device]
{device}n_features = {n_features}

[broker]
url = {json.dumps(broker_url)}
ca = {json.dumps(ca)}
{tls}stack_name = {json.dumps(stack)}   # the IoT rules status and upload requests go to

[artifacts]
base_url = {json.dumps(cdn_url)}

[trust]
root = {json.dumps(ROOT_FILE)}   # root v1 of the fleet's TUF repository

[state]
dir = {json.dumps(state_dir)}

[source]
kind = "stdin"
{provisioning}"""


def _check_rule_names(outputs: StackOutputs) -> None:
    """The agent derives the rule names from the stack's name, as infra/ names them."""
    from edgeloop.contract.topics import RuleNames

    try:
        derived = RuleNames(outputs.stack)
    except ValueError as exc:
        raise CliError(f"--stack {outputs.stack}: {exc}", "bad_stack_name") from exc
    pairs = ((STATUS_RULE, derived.status), (UPLOAD_REQUEST_RULE, derived.upload_requests))
    for output, expected in pairs:
        if outputs[output] != expected:
            raise CliError(
                f"stack {outputs.stack}'s {output} is {outputs[output]}, the agent would "
                f"publish to {expected}: the stack and this edgeloop disagree on rule names",
                "rule_mismatch",
                EXIT_FAILED,
            )


def _config(args: argparse.Namespace) -> int:
    import boto3

    from edgeloop.cli.local import load_model_dir

    out = Path(args.out)
    root_path = out.parent / ROOT_FILE
    if out.exists() and not args.force:
        raise CliError(f"{out} exists; pass --force to replace it", "exists")
    outputs = outputs_of(args)
    _check_rule_names(outputs)
    with aws_errors(f"thing {args.thing} in stack {outputs.stack}"):
        iot = boto3.client("iot", endpoint_url=args.endpoint_url)
        model = _thing_model(iot, args.thing)
        address = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
        if args.root:
            try:
                root = Path(args.root).read_bytes()
            except OSError as exc:
                raise CliError(f"--root {args.root}: {exc.strerror}", "no_such_file") from exc
        else:
            s3 = boto3.client("s3", endpoint_url=args.endpoint_url)
            root = _root_v1(s3, outputs[ARTIFACT_BUCKET])
    _checked_root(root, args.root or f"s3://{outputs[ARTIFACT_BUCKET]}/{ROOT_V1_KEY}")
    configs = load_model_dir(Path(args.models))
    if model not in configs:
        raise CliError(
            f"thing {args.thing} is enrolled for model {model!r}, which has no config in "
            f"{args.models} ({', '.join(sorted(configs))}): pass --models",
            "unknown_model",
        )
    text = agent_toml(
        stack=outputs.stack,
        thing=args.thing,
        model=model,
        n_features=configs[model][1].model.n_features,
        broker_url=f"mqtts://{address}:{IOT_PORT}",
        cdn_url=outputs[CDN_BASE_URL],
        ca=args.ca,
        cert=args.cert or f"{args.thing}.cert.pem",
        key=args.key or f"{args.thing}.private.key",
        state_dir=args.state_dir,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    root_path.write_bytes(root)
    out.write_text(text, encoding="utf-8")
    doc = {
        "agent_config": str(out),
        "root": str(root_path),
        "thing": args.thing,
        "model": model,
        "broker_url": f"mqtts://{address}:{IOT_PORT}",
        "cdn_url": outputs[CDN_BASE_URL],
        "stack": outputs.stack,
    }
    if args.json:
        emit(doc)
    else:
        print(
            f"{out}: {args.thing} runs {model} on stack {outputs.stack} (broker {address}); "
            f"trust anchor {root_path}. Put the thing's certificate, key and Amazon Root "
            f"CA 1 beside it, then: edgeloop-agent run --config {out}"
        )
    return 0


def _claim(args: argparse.Namespace) -> int:

    import boto3

    from edgeloop.cli.local import load_model_dir

    out = Path(args.out)
    cert_path, key_path = out.parent / "claim.pem", out.parent / "claim.key"
    for path in (out, cert_path, key_path):
        if path.exists() and not args.force:
            raise CliError(f"{path} exists; pass --force to replace it", "exists")
    configs = load_model_dir(Path(args.models))
    if args.model not in configs:
        raise CliError(
            f"--model {args.model}: no config in {args.models} ({', '.join(sorted(configs))})",
            "unknown_model",
        )
    outputs = outputs_of(args)
    _check_rule_names(outputs)
    # A stack deployed before provisioning by claim is refused here, with the output named.
    template, claim_policy = outputs[PROVISIONING_TEMPLATE], outputs[CLAIM_POLICY]
    with aws_errors(f"the claim for stack {outputs.stack}"):
        iot = boto3.client("iot", endpoint_url=args.endpoint_url)
        address = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
        if args.root:
            try:
                root = Path(args.root).read_bytes()
            except OSError as exc:
                raise CliError(f"--root {args.root}: {exc.strerror}", "no_such_file") from exc
        else:
            root = _root_v1(
                boto3.client("s3", endpoint_url=args.endpoint_url), outputs[ARTIFACT_BUCKET]
            )
        _checked_root(root, args.root or f"s3://{outputs[ARTIFACT_BUCKET]}/{ROOT_V1_KEY}")
        made = iot.create_keys_and_certificate(setAsActive=True)
        iot.attach_policy(policyName=claim_policy, target=made["certificateArn"])
    out.parent.mkdir(parents=True, exist_ok=True)
    write_private(key_path, made["keyPair"]["PrivateKey"])
    cert_path.write_text(made["certificatePem"])
    (out.parent / ROOT_FILE).write_bytes(root)
    broker_url = f"mqtts://{address}:{IOT_PORT}"
    out.write_text(
        agent_toml(
            stack=outputs.stack,
            thing="",
            model="",
            n_features=configs[args.model][1].model.n_features,
            broker_url=broker_url,
            cdn_url=outputs[CDN_BASE_URL],
            ca=args.ca,
            cert=cert_path.name,
            key=key_path.name,
            state_dir=args.state_dir,
            template=template,
        ),
        encoding="utf-8",
    )
    doc = {
        "agent_config": str(out),
        "claim_certificate_id": made["certificateId"],
        "claim_policy": claim_policy,
        "template": template,
        "broker_url": broker_url,
        "stack": outputs.stack,
    }
    if args.json:
        emit(doc)
    else:
        print(
            f"{out.parent}: the claim bundle for stack {outputs.stack} (claim certificate "
            f"{made['certificateId'][:12]}, policy {claim_policy}). Admit serials "
            f"with `edgeloop fleet allow`, put Amazon Root CA 1 beside it as {args.ca}, then "
            f"on each device: edgeloop-agent run --config {out.name} --serial SERIAL"
        )
    return 0


def _common_options(p: argparse.ArgumentParser, out: str, root_help: str, json_help: str) -> None:
    """What `device config` and `device claim` both take: where the stack, the model
    configs, the trust anchor and the CA are, and where to write."""
    add_stack_option(p)
    p.add_argument("--out", default=out, help="where to write (default: %(default)s)")
    p.add_argument(
        "--models", default="models", help="the model configs directory (default: %(default)s)"
    )
    p.add_argument("--root", default=None, help=root_help)
    p.add_argument("--ca", default="AmazonRootCA1.pem", help="the CA file (default: %(default)s)")
    p.add_argument("--state-dir", default="state", help="the agent's state (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace what --out names")
    p.add_argument(
        "--endpoint-url",
        default=None,
        help="AWS endpoint to use instead of AWS's own (e.g. the local cloud's moto server)",
    )
    p.add_argument("--json", action="store_true", help=json_help)


def register(sub: Any, json_help: str) -> None:
    device = sub.add_parser("device", help="a device's agent config for a deployed stack")
    commands = device.add_subparsers(dest="device_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "config",
        help="write agent.toml (and the trust anchor beside it) for one thing",
        description="Write the agent's config for THING on a deployed stack: the IoT "
        "data endpoint, the CDN, the stack's rule names, the thing's model and the "
        "fleet's root metadata, all read from the account. AWS settings come from the "
        "usual environment: AWS_PROFILE or keys, and AWS_REGION.",
    )
    _common_options(
        p,
        "agent.toml",
        f"the ceremony's root metadata file (default: {ROOT_V1_KEY} in the stack's ArtifactBucket)",
        json_help,
    )
    p.add_argument("--thing", required=True, help="the device's IoT thing name")
    p.add_argument("--cert", default=None, help="the thing's certificate (default: THING.cert.pem)")
    p.add_argument(
        "--key", default=None, help="the thing's private key (default: THING.private.key)"
    )
    p.set_defaults(run=_config)

    p = commands.add_parser(
        "claim",
        help="write the claim bundle a batch of devices provisions itself with",
        description="Make a claim certificate with the stack's claim policy (it may only "
        "call fleet provisioning) and write it with agent.toml and the fleet's trust anchor: "
        "one bundle for every device of a batch. Each device starts with its own serial, "
        "makes its own key, and is admitted by the allow-list (`edgeloop fleet allow`).",
    )
    _common_options(p, "claim/agent.toml", "the ceremony's root metadata file", json_help)
    p.add_argument(
        "--model",
        required=True,
        help="the model these devices' sensors feed (sets n_features; the allow-list "
        "decides each device's model)",
    )
    p.set_defaults(run=_claim)
