"""`--stack NAME` reads the names from the deployed stack's outputs, and `edgeloop device
config` writes an agent config for a real deployment, against moto's CloudFormation."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from edge.config import load_agent_config
from edgeloop.cli.main import main
from edgeloop.cli.stack import (
    ADMISSION_TABLE,
    ARTIFACT_BUCKET,
    CANARY_GROUP,
    CDN_BASE_URL,
    CLAIM_POLICY,
    DATA_BUCKET,
    DEVICE_POLICY_NAME,
    FLEET_TABLE,
    ONLINE_KEY_ARN,
    PROVISIONING_TEMPLATE,
    REGISTRY_TABLE,
    STATUS_RULE,
    UPLOAD_REQUEST_RULE,
)
from edgeloop.contract.topics import RuleNames
from functions.common.admission import admission_table_spec
from tests.support_aws import LocalCloud

CDN = "https://d111111abcdef8.cloudfront.net/"


def _deploy_stack(
    cloud: LocalCloud, omit: tuple[str, ...] = (), extra: dict[str, str] | None = None
) -> str:
    """A stack in moto's CloudFormation whose outputs name the local cloud's resources,
    as `cdk deploy` would leave them."""
    name = f"edgeloop-{uuid.uuid4().hex[:6]}"
    rules = RuleNames(name)
    outputs = {
        CDN_BASE_URL: CDN,
        ONLINE_KEY_ARN: cloud.names["SIGNING_KEY_ID"],
        ARTIFACT_BUCKET: cloud.names["ARTIFACT_BUCKET"],
        DEVICE_POLICY_NAME: f"{name}-device",
        CANARY_GROUP: cloud.names["CANARY_GROUP"],
        STATUS_RULE: rules.status,
        UPLOAD_REQUEST_RULE: rules.upload_requests,
        FLEET_TABLE: cloud.names["FLEET_TABLE"],
        REGISTRY_TABLE: cloud.names["REGISTRY_TABLE"],
        DATA_BUCKET: cloud.names["DATA_BUCKET"],
        **(extra or {}),
    }
    template = {
        "Resources": {"Anchor": {"Type": "AWS::SNS::Topic", "Properties": {}}},
        "Outputs": {k: {"Value": v} for k, v in outputs.items() if k not in omit},
    }
    cloud.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))
    return name


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    code = main(args)
    captured = capsys.readouterr()
    out = json.loads(captured.out) if "--json" in args and captured.out.strip() else captured.out
    return code, out, captured.err


def test_device_config_writes_an_agent_config_the_agent_accepts(
    cloud: LocalCloud, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = _deploy_stack(cloud)
    out = tmp_path / "pump-7" / "agent.toml"
    args = ["device", "config", "--stack", stack, "--thing", "pump-7", "--out", str(out)]
    code, doc, err = _run([*args, "--models", str(cloud.config_dir), "--json"], capsys)
    assert code == 0, err
    assert doc["model"] == "digits"
    # What provisioning gives a real device, so the agent's own loader can check the file.
    for name in ("pump-7.cert.pem", "pump-7.private.key", "AmazonRootCA1.pem"):
        (out.parent / name).write_text("-----BEGIN-----\n")
    config = load_agent_config(out)
    assert config.device.thing == "pump-7"
    assert config.device.model == "digits"
    assert config.device.n_features == 64
    # moto names a fresh ATS endpoint per call; its shape is AWS's.
    assert re.fullmatch(
        r"mqtts://[a-z0-9]+-ats\.iot\.eu-west-1\.amazonaws\.com:8883", config.broker.url
    )
    assert doc["broker_url"] == config.broker.url
    assert config.broker.tls
    assert config.broker.stack_name == stack
    assert config.broker.basic_ingest
    assert config.artifacts.base_url == CDN
    root_v1 = (
        cloud.client("s3")
        .get_object(Bucket=cloud.names["ARTIFACT_BUCKET"], Key="models/tuf/metadata/1.root.json")[
            "Body"
        ]
        .read()
    )
    assert config.trust.root.read_bytes() == root_v1
    assert config.trust.root.parent == out.parent


@pytest.mark.parametrize(
    ("thing", "omit", "says"),
    [
        ("pump-404", (), "thing pump-404 is not in this account's IoT registry"),
        ("pump-7", (CDN_BASE_URL,), "has no output CdnBaseUrl"),
    ],
)
def test_device_config_refuses_in_one_line(
    cloud: LocalCloud,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    thing: str,
    omit: tuple[str, ...],
    says: str,
) -> None:
    stack = _deploy_stack(cloud, omit)
    args = ["device", "config", "--stack", stack, "--thing", thing]
    code, _, err = _run(
        [*args, "--out", str(tmp_path / "a.toml"), "--models", str(cloud.config_dir)], capsys
    )
    assert code == 1
    assert says in err
    assert err.strip().count("\n") == 0, err
    assert not (tmp_path / "a.toml").exists()


def test_fleet_reads_its_table_from_the_stack(
    cloud: LocalCloud, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGELOOP_FLEET_TABLE", raising=False)
    stack = _deploy_stack(cloud)
    code, doc, err = _run(["fleet", "--model", "digits", "--stack", stack, "--json"], capsys)
    assert code == 0, err
    assert doc == {"model": "digits", "devices": []}


def test_the_allow_list_commands_read_the_admission_table_from_the_stack(
    cloud: LocalCloud, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGELOOP_ADMISSION_TABLE", raising=False)
    table = f"admissions-{uuid.uuid4().hex[:6]}"
    cloud.client("dynamodb").create_table(**admission_table_spec(table))
    stack = _deploy_stack(cloud, extra={ADMISSION_TABLE: table})
    code, _, err = _run(["fleet", "allow", "pump-7", "--model", "digits", "--stack", stack], capsys)
    assert code == 0, err
    code, doc, err = _run(["fleet", "allowed", "--stack", stack, "--json"], capsys)
    assert code == 0, err
    assert doc["table"] == table
    assert [e["value"] for e in doc["entries"]] == ["pump-7"]
    # A stack deployed before provisioning by claim says so, in one line.
    older = _deploy_stack(cloud)
    code, _, err = _run(["fleet", "allowed", "--stack", older], capsys)
    assert code == 1
    assert "has no output AdmissionTable" in err
    assert err.strip().count("\n") == 0, err


def test_rollout_reads_the_registry_table_from_the_stack(
    cloud: LocalCloud, capsys: pytest.CaptureFixture[str]
) -> None:
    """It reaches the registry (no rollout yet), where a wrong table would be not found."""
    stack = _deploy_stack(cloud)
    code, doc, _ = _run(
        ["rollout", "status", "--model", "digits", "--stack", stack, "--json"], capsys
    )
    assert code == 1
    assert doc["code"] == "no_rollout"


def test_trust_status_reads_the_artifact_bucket_from_the_stack(
    cloud: LocalCloud, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGELOOP_ARTIFACT_BUCKET", raising=False)
    monkeypatch.setenv("EDGELOOP_STACK", _deploy_stack(cloud))
    code, doc, err = _run(["trust", "status", "--json"], capsys)
    assert code == 0, err
    assert doc["root_version"] == 1


@pytest.mark.parametrize(
    ("args", "says", "code"),
    [
        (
            ["--stack", "edgeloop-nowhere"],
            "stack edgeloop-nowhere does not exist",
            "stack_not_found",
        ),
        (
            [],
            "pass --table, --local DIR (a running `edgeloop local up`), or --stack NAME "
            "(its RegistryTable output)",
            "usage",
        ),
    ],
)
def test_rollout_without_a_stack_says_what_to_pass_in_one_line(
    cloud: LocalCloud,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    says: str,
    code: str,
) -> None:
    for env in ("EDGELOOP_REGISTRY_TABLE", "EDGELOOP_STACK"):
        monkeypatch.delenv(env, raising=False)
    status, _, err = _run(["rollout", "status", "--model", "digits", *args], capsys)
    assert status != 0
    assert says in err
    assert err.strip().count("\n") == 0, err
    _, doc, _ = _run(["rollout", "status", "--model", "digits", *args, "--json"], capsys)
    assert doc["code"] == code


def test_device_claim_writes_one_bundle_for_a_batch_that_names_no_thing(
    cloud: LocalCloud, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = _deploy_stack(
        cloud, extra={PROVISIONING_TEMPLATE: "batch-fleet", CLAIM_POLICY: "claim"}
    )
    cloud.client("iot").create_policy(policyName="claim", policyDocument='{"Statement": []}')
    out = tmp_path / "batch" / "agent.toml"
    args = ["device", "claim", "--stack", stack, "--model", "digits", "--out", str(out)]
    code, doc, err = _run([*args, "--models", str(cloud.config_dir), "--json"], capsys)
    assert code == 0, err
    # The claim is a new certificate holding only the claim policy; its key is owner-only.
    iot = cloud.client("iot")
    arn = iot.describe_certificate(certificateId=doc["claim_certificate_id"])[
        "certificateDescription"
    ]["certificateArn"]
    assert [p["policyName"] for p in iot.list_attached_policies(target=arn)["policies"]] == [
        "claim"
    ]
    assert (out.parent / "claim.key").stat().st_mode & 0o777 == 0o600
    (out.parent / "AmazonRootCA1.pem").write_text("-----BEGIN-----\n")
    config = load_agent_config(out)
    assert config.provisioning is not None
    assert config.provisioning.template == "batch-fleet"
    assert config.provisioning.claim_cert == out.parent / "claim.pem"
    # No thing and no model: each device learns both when it registers.
    assert (config.device.thing, config.device.model) == ("", "")
    assert config.device.n_features == 64
    assert config.broker.cert is None


def test_device_claim_refuses_a_stack_without_provisioning_in_one_line(
    cloud: LocalCloud, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = _deploy_stack(cloud)
    args = ["device", "claim", "--stack", stack, "--model", "digits"]
    code, _, err = _run(
        [*args, "--models", str(cloud.config_dir), "--out", str(tmp_path / "agent.toml")], capsys
    )
    assert code != 0
    assert f"stack {stack} has no output {PROVISIONING_TEMPLATE}" in err
    assert len(err.strip().splitlines()) == 1
