"""Assertions on the synthesized CloudFormation template (no Docker, no credentials)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import Stack
from aws_cdk.assertions import Annotations, Match, Template

from edgeloop.contract import RuleNames
from edgeloop.contract.device_policy import device_grants
from functions.common.fleet import TTL_ATTRIBUTE
from functions.common.identity import MODEL_ATTRIBUTE
from functions.common.presence import presence_sql
from functions.common.registry import STAGE_COUNTER_FILTER
from infra.app import build_app
from infra.constructs.data_intake import MAX_RECEIVES


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Stack, Template, Path]:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = build_app(str(outdir))
    stack = app.node.children[0]
    assert isinstance(stack, Stack)
    template = Template.from_stack(stack)
    app.synth()
    return stack, template, outdir / f"{stack.stack_name}.template.json"


@pytest.fixture(scope="module")
def template(synthesized: tuple[Stack, Template, Path]) -> Template:
    return synthesized[1]


def _resources(template: Template, kind: str) -> dict[str, Any]:
    return dict(template.find_resources(kind))


def _joined(value: Any) -> str:
    """An ARN as text: `Fn::Join` flattened, references to the partition, region and
    account kept as their names."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_joined(p) for p in parts)
    return "<" + json.dumps(value) + ">"


# The thing registry attribute presign and status read a device's model from.
MODEL = "${iot:Connection.Thing.Attributes[" + MODEL_ATTRIBUTE + "]}"


def _logical_id(template: Template, kind: str, fragment: str) -> str:
    [logical] = [k for k in _resources(template, kind) if fragment in k]
    return logical


def _device_policy(template: Template) -> dict[str, Any]:
    """The device policy (the claim certificate's is the other IoT policy)."""
    [policy] = [
        p
        for p in _resources(template, "AWS::IoT::Policy").values()
        if p["Properties"]["PolicyName"].endswith("-device")
    ]
    found: dict[str, Any] = policy
    return found


def test_cdk_nag_finds_nothing_unexplained(synthesized: tuple[Stack, Template, Path]) -> None:
    stack = synthesized[0]
    annotations = Annotations.from_stack(stack)
    errors = annotations.find_error("*", Match.string_like_regexp("AwsSolutions-.*"))
    warnings = annotations.find_warning("*", Match.string_like_regexp("AwsSolutions-.*"))
    assert [e.entry.data for e in errors] == []
    assert [w.entry.data for w in warnings] == []


def test_uploads_notify_the_queue_which_has_a_dead_letter_queue(template: Template) -> None:
    template.has_resource_properties(
        "Custom::S3BucketNotifications",
        {
            "NotificationConfiguration": {
                "QueueConfigurations": [
                    Match.object_like(
                        {
                            "Events": ["s3:ObjectCreated:*"],
                            "Filter": {
                                "Key": {"FilterRules": [{"Name": "prefix", "Value": "data/"}]}
                            },
                        }
                    )
                ]
            }
        },
    )
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "RedrivePolicy": {
                "deadLetterTargetArn": Match.any_value(),
                "maxReceiveCount": MAX_RECEIVES,
            }
        },
    )


def test_retrain_consumes_the_queue_in_windows_with_partial_failures(template: Template) -> None:
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "BatchSize": 100,
            "MaximumBatchingWindowInSeconds": 60,
            "ScalingConfig": {"MaximumConcurrency": 2},
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        },
    )


def test_queue_visibility_is_at_least_six_times_the_retrain_timeout(template: Template) -> None:
    functions = _resources(template, "AWS::Lambda::Function")
    retrain = functions[_logical_id(template, "AWS::Lambda::Function", "Retrain")]["Properties"]
    queues = _resources(template, "AWS::SQS::Queue")
    [main] = [q for q in queues.values() if "RedrivePolicy" in q["Properties"]]
    assert main["Properties"]["VisibilityTimeout"] >= 6 * retrain["Timeout"]
    assert retrain["Timeout"] == 900


def test_every_bucket_refuses_plain_http(template: Template) -> None:
    buckets = _resources(template, "AWS::S3::Bucket")
    policies = _resources(template, "AWS::S3::BucketPolicy")
    covered = set()
    for policy in policies.values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if (
                statement["Effect"] == "Deny"
                and statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")
                == "false"
            ):
                covered.add(policy["Properties"]["Bucket"]["Ref"])
    assert covered == set(buckets)
    for bucket in buckets.values():
        block = bucket["Properties"]["PublicAccessBlockConfiguration"]
        assert all(
            block[k] is True
            for k in (
                "BlockPublicAcls",
                "BlockPublicPolicy",
                "IgnorePublicAcls",
                "RestrictPublicBuckets",
            )
        )


def test_only_cloudfront_reads_the_artifact_bucket(template: Template) -> None:
    artifact = _logical_id(template, "AWS::S3::Bucket", "ArtifactBucket")
    distribution = _logical_id(template, "AWS::CloudFront::Distribution", "Cdn")
    [policy] = [
        p
        for p in _resources(template, "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"]["Ref"] == artifact
    ]
    allows = [
        s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"
    ]
    assert len(allows) == 1
    [allow] = allows
    assert allow["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert allow["Action"] == "s3:GetObject"
    # The TUF repository, not the whole bucket.
    assert _joined(allow["Resource"]).endswith("/models/tuf/*")
    source = json.dumps(allow["Condition"]["StringEquals"]["AWS:SourceArn"])
    assert distribution in source
    template.has_resource_properties(
        "AWS::CloudFront::Distribution",
        {
            "DistributionConfig": Match.object_like(
                {"DefaultCacheBehavior": Match.object_like({"ViewerProtocolPolicy": "https-only"})}
            )
        },
    )


TUF_WRITERS = ("Retrain", "Rollback", "EvaluateRollouts", "TrainingJobsDone")
FUNCTIONS = ("Retrain", "Rollback", "Presign", "Status", "EvaluateRollouts", "TrainingJobsDone")


def _statements(template: Template) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for logical, policy in _resources(template, "AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            found.append((logical, statement))
    return found


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def test_the_online_key_is_p256_and_only_the_functions_writing_tuf_metadata_may_sign(
    template: Template,
) -> None:
    template.has_resource_properties(
        "AWS::KMS::Key", {"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"}
    )
    signers = [
        logical
        for logical, statement in _statements(template)
        if any(a in ("kms:Sign", "kms:*") for a in _actions(statement))
    ]
    assert sorted(f for f in TUF_WRITERS for s in signers if f in s.split("Role")[0]) == sorted(
        TUF_WRITERS
    )
    assert len(signers) == len(TUF_WRITERS)
    [key] = _resources(template, "AWS::KMS::Key").values()
    for statement in key["Properties"]["KeyPolicy"]["Statement"]:
        principal = json.dumps(statement["Principal"])
        assert "kms:Sign" not in _actions(statement) or any(f in principal for f in TUF_WRITERS)
    for function in _resources(template, "AWS::Lambda::Function").values():
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        assert "MANIFEST_TTL_DAYS" not in variables


def test_functions_write_only_the_tuf_repository_under_the_artifact_bucket(
    template: Template,
) -> None:
    """No function writes anything else devices fetch; root keys are nowhere in the cloud,
    so no statement could reach one (root metadata is public, its keys are offline)."""
    bucket = _logical_id(template, "AWS::S3::Bucket", "ArtifactBucket")
    writers = set()
    for logical, statement in _statements(template):
        if statement["Effect"] != "Allow":
            continue
        if not any(a.startswith("s3:Put") or a == "s3:*" for a in _actions(statement)):
            continue
        resources = json.dumps(statement["Resource"])
        if bucket not in resources:
            continue
        assert "/models/tuf/*" in resources, (logical, resources)
        assert '/models/*"' not in resources
        writers.add(next(f for f in TUF_WRITERS if f in logical))
    assert writers == set(TUF_WRITERS)
    for function in _resources(template, "AWS::Lambda::Function").values():
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        assert not any("ROOT" in name for name in variables)
        if "SIGNING_KEY_ID" in variables:
            assert "ARTIFACT_BUCKET" in variables


def test_rollback_is_invoked_by_an_operator_only(template: Template) -> None:
    rollback = _logical_id(template, "AWS::Lambda::Function", "Rollback")
    mappings = _resources(template, "AWS::Lambda::EventSourceMapping").values()
    assert sorted(m["Properties"]["FunctionName"]["Ref"] for m in mappings) == sorted(
        _logical_id(template, "AWS::Lambda::Function", f) for f in ("Retrain", "EvaluateRollouts")
    )
    permissions = _resources(template, "AWS::Lambda::Permission").values()
    assert rollback not in json.dumps([p["Properties"]["FunctionName"] for p in permissions])
    rules = _resources(template, "AWS::Events::Rule").values()
    [schedule] = [r for r in rules if "ScheduleExpression" in r["Properties"]]
    [target] = schedule["Properties"]["Targets"]
    assert "EvaluateRollouts" in json.dumps(target["Arn"])
    assert rollback not in json.dumps([r["Properties"]["Targets"] for r in rules])
    [role] = [
        p
        for p in _resources(template, "AWS::IAM::Policy").values()
        if any("Rollback" in r["Ref"] for r in p["Properties"]["Roles"])
    ]
    data_bucket = _logical_id(template, "AWS::S3::Bucket", "DataIntakeDataBucket")
    assert data_bucket not in json.dumps(role)


def test_each_function_has_its_own_role_and_no_wildcard_data_writes(template: Template) -> None:
    functions = _resources(template, "AWS::Lambda::Function")
    ours = {k: v for k, v in functions.items() if "IotWiring" in k or "TrainingPipeline" in k}
    roles = [json.dumps(f["Properties"]["Role"]) for f in ours.values()]
    assert len(ours) == 5
    assert len(set(roles)) == 5
    writes = (
        "s3:PutObject",
        "s3:DeleteObject*",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "iot:Publish",
    )
    for policy in _resources(template, "AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = (
                statement["Action"]
                if isinstance(statement["Action"], list)
                else [statement["Action"]]
            )
            if any(a in writes for a in actions):
                resources = (
                    statement["Resource"]
                    if isinstance(statement["Resource"], list)
                    else [statement["Resource"]]
                )
                assert "*" not in resources, statement


def test_presign_and_status_read_who_a_device_is_from_the_thing_registry(
    template: Template,
) -> None:
    readers = []
    for logical, policy in _resources(template, "AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"]
            if "iot:DescribeThing" in (actions if isinstance(actions, list) else [actions]):
                readers.append(logical)
                assert json.dumps(statement["Resource"]).endswith(':thing/*"]]}')
    assert sorted(f for f in ("Presign", "Status") for r in readers if f in r) == [
        "Presign",
        "Status",
    ]
    [canary_group] = [
        g["Properties"]["ThingGroupName"]
        for g in _resources(template, "AWS::IoT::ThingGroup").values()
        if g["Properties"]["ThingGroupName"].endswith("-canary")
    ]
    # Retrain and rollback start rollouts: they ask who the named canaries are.
    for fragment in ("Presign", "Status", "EvaluateRollouts", "Retrain", "Rollback"):
        function = _resources(template, "AWS::Lambda::Function")[
            _logical_id(template, "AWS::Lambda::Function", fragment)
        ]
        assert function["Properties"]["Environment"]["Variables"]["CANARY_GROUP"] == canary_group


def test_the_device_policy_pins_each_thing_to_its_own_topics(template: Template) -> None:
    policy = _device_policy(template)
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    by_action = {s["Action"]: s for s in statements}
    thing = "${iot:Connection.Thing.ThingName}"
    assert thing in json.dumps(by_action["iot:Connect"]["Resource"])
    assert by_action["iot:Connect"]["Condition"] == {
        "Bool": {"iot:Connection.Thing.IsAttached": "true"}
    }
    publish = json.dumps(by_action["iot:Publish"]["Resource"])
    assert publish.count(f"edgeloop/things/{thing}/") == 5
    assert "edgeloop/models" not in publish  # devices never announce models
    subscribe = json.dumps(by_action["iot:Subscribe"]["Resource"])
    assert f"topicfilter/edgeloop/things/{thing}/upload/response" in subscribe
    # Its model's bands' nudges (which band follows from its name) and its own.
    assert f"topicfilter/edgeloop/models/{MODEL}/bands/*/nudge" in subscribe
    assert f"topicfilter/edgeloop/things/{thing}/nudge" in subscribe
    assert "rings" not in json.dumps(statements)
    # Nothing lets a device reach another thing's topics.
    assert "edgeloop/things/*" not in json.dumps(statements)
    assert "edgeloop/things/+" not in json.dumps(statements)


def test_devices_may_publish_by_basic_ingest_only_to_their_own_topics_of_the_named_rules(
    template: Template,
) -> None:
    policy = _device_policy(template)
    [publish] = [
        s
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if s["Action"] == "iot:Publish"
    ]
    thing = "${iot:Connection.Thing.ThingName}"
    arns = [_joined(r) for r in publish["Resource"]]
    topics = sorted(arn.split(":topic/", 1)[1] for arn in arns if "$aws/" in arn)
    assert topics == [
        f"$aws/rules/edgeloop_status/edgeloop/things/{thing}/status",
        f"$aws/rules/edgeloop_upload_requests/edgeloop/things/{thing}/upload/request",
    ]
    # No grant over every rule, and nothing from the reserved space but the rules.
    statements = json.dumps(policy["Properties"]["PolicyDocument"])
    assert "$aws/rules/*" not in statements
    assert "$aws/rules/+" not in statements
    assert statements.count("$aws/") == 2


def test_topic_rules_have_the_names_devices_publish_to(template: Template) -> None:
    names = sorted(
        r["Properties"]["RuleName"] for r in _resources(template, "AWS::IoT::TopicRule").values()
    )
    rules = RuleNames("edgeloop")
    assert names == [rules.presence, rules.status, rules.upload_requests]
    assert names == ["edgeloop_presence", "edgeloop_status", "edgeloop_upload_requests"]


def test_topic_rules_and_the_policy_are_named_after_the_stack_so_two_stacks_never_share_one(
    tmp_path: Path,
) -> None:
    app = build_app(str(tmp_path), context={"stack_name": "edgeloop-staging"})
    stack = app.node.children[0]
    assert isinstance(stack, Stack)
    staging = Template.from_stack(stack)
    names = sorted(
        r["Properties"]["RuleName"] for r in _resources(staging, "AWS::IoT::TopicRule").values()
    )
    assert names == [
        "edgeloop_staging_presence",
        "edgeloop_staging_status",
        "edgeloop_staging_upload_requests",
    ]
    policy = _device_policy(staging)
    assert "$aws/rules/edgeloop_staging_status/" in json.dumps(policy)
    assert "$aws/rules/edgeloop_status/" not in json.dumps(policy)


def test_topic_rules_route_requests_and_status_with_the_topics_thing(template: Template) -> None:
    rules = [
        r["Properties"]["TopicRulePayload"]
        for r in _resources(template, "AWS::IoT::TopicRule").values()
        if "Lambda" in r["Properties"]["TopicRulePayload"]["Actions"][0]
    ]
    sqls = sorted(r["Sql"] for r in rules)
    assert sqls == [
        "SELECT *, topic(3) AS topic_thing FROM 'edgeloop/things/+/status'",
        "SELECT *, topic(3) AS topic_thing FROM 'edgeloop/things/+/upload/request'",
    ]
    permissions = _resources(template, "AWS::Lambda::Permission")
    # The two rules', and the provisioning template's (its hook).
    assert (
        sum(1 for p in permissions.values() if p["Properties"]["Principal"] == "iot.amazonaws.com")
        == 3
    )


def test_the_named_canaries_and_the_provisioned_fleet_are_the_only_thing_groups(
    template: Template,
) -> None:
    """Stages after the named canaries follow from thing names: no group per stage. The
    provisioning hook puts every other device it admits in the fleet's group."""
    names = sorted(
        g["Properties"]["ThingGroupName"]
        for g in _resources(template, "AWS::IoT::ThingGroup").values()
    )
    assert names == ["edgeloop-canary", "edgeloop-fleet-devices"]


def test_alarms_cover_the_dlq_errors_and_refused_promotions(template: Template) -> None:
    alarms = _resources(template, "AWS::CloudWatch::Alarm")
    metrics = sorted(a["Properties"].get("MetricName", "") for a in alarms.values())
    assert metrics.count("Errors") == len(FUNCTIONS) + 1  # and the provisioning hook
    assert "ApproximateNumberOfMessagesVisible" in metrics
    assert "RefusedPromotions" in metrics
    template.resource_count_is("AWS::CloudWatch::Dashboard", 1)


def test_the_template_passes_cfn_lint(synthesized: tuple[Stack, Template, Path]) -> None:
    path = synthesized[2]
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(
        [str(cfn_lint), "--format", "parseable", "--", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    # parseable lines: file:line:col:end_line:end_col:RULE:message; E rules are errors.
    rules = [(line.split(":") + [""] * 6)[5] for line in result.stdout.splitlines()]
    errors = [rule for rule in rules if rule.startswith("E")]
    assert errors == [], result.stdout
    assert result.returncode & 2 == 0, result.stdout + result.stderr  # bit 2: errors found
    assert result.returncode & ~(2 | 4 | 8) == 0, result.stderr  # no crash or usage error


def test_nag_also_passes_with_a_concrete_account_and_region(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`cdk synth` and `cdk deploy` resolve the environment; the suppressions must still match."""
    monkeypatch.setenv("CDK_DEFAULT_ACCOUNT", "123456789012")
    monkeypatch.setenv("CDK_DEFAULT_REGION", "eu-west-1")
    app = build_app(str(tmp_path))
    stack = app.node.children[0]
    assert isinstance(stack, Stack)
    app.synth()
    errors = Annotations.from_stack(stack).find_error(
        "*", Match.string_like_regexp("AwsSolutions-.*")
    )
    assert [e.entry.data for e in errors] == []
    assert "eu-west-1" in json.dumps(Template.from_stack(stack).to_json())


# --- least privilege, read from the template ------------------------------------------------


def _role_statements(template: Template, function: str) -> list[dict[str, Any]]:
    """Every statement of `function`'s role (its default policy)."""
    [policy] = [
        p
        for p in _resources(template, "AWS::IAM::Policy").values()
        if any(function in r["Ref"].split("ServiceRole")[0] for r in p["Properties"]["Roles"])
        and any(
            r["Ref"].split("ServiceRole")[0].endswith(function) for r in p["Properties"]["Roles"]
        )
    ]
    statements: list[dict[str, Any]] = policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def _resource_list(statement: dict[str, Any]) -> list[str]:
    resource = statement["Resource"]
    return [_joined(r) for r in (resource if isinstance(resource, list) else [resource])]


def _may(template: Template, function: str, action: str, resource: str) -> bool:
    """IAM's answer for one role, one action and one resource: an explicit Deny wins, then
    any Allow (`*` matches any characters, in actions and resources alike)."""

    def like(value: str, pattern: str) -> bool:
        return re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), value) is not None

    def matches(statement: dict[str, Any]) -> bool:
        return any(like(action, a) for a in _actions(statement)) and any(
            like(resource, r) for r in _resource_list(statement)
        )

    statements = [s for s in _role_statements(template, function) if matches(s)]
    if any(s["Effect"] == "Deny" for s in statements):
        return False
    return any(s["Effect"] == "Allow" for s in statements)


def _artifact_object(template: Template, key: str) -> str:
    bucket = _logical_id(template, "AWS::S3::Bucket", "ArtifactBucket")
    return "<" + json.dumps({"Fn::GetAtt": [bucket, "Arn"]}) + ">/" + key


def test_a_device_hears_only_its_own_models_nudges(template: Template) -> None:
    """The nudge grants name the thing's registry attribute, the one presign and status
    read its model from: a device cannot subscribe to another model's rollout."""
    policy = _device_policy(template)
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    for action, kind in (("iot:Subscribe", "topicfilter"), ("iot:Receive", "topic")):
        [statement] = [s for s in statements if s["Action"] == action]
        nudges = [r for r in _resource_list(statement) if "/models/" in r]
        assert [r.split(f":{kind}/", 1)[1] for r in nudges] == [
            f"edgeloop/models/{MODEL}/bands/*/nudge"
        ]
    assert "edgeloop/models/*" not in json.dumps(statements)
    # The stack renders the contract's grants, the one source a broker ACL can read too.
    grants = device_grants(RuleNames("edgeloop"))
    assert len(statements) == len(grants)
    for statement, grant in zip(statements, grants, strict=True):
        assert [r.split("/", 1)[1] for r in _resource_list(statement)] == list(grant.names)


def test_no_function_may_write_root_metadata(template: Template) -> None:
    """Root is written offline by people with root keys; an explicit Deny on every
    function's role, whatever else it may write under models/tuf/."""
    root_keys = (
        "models/tuf/metadata/1.root.json",
        "models/tuf/metadata/12.root.json",
        "models/tuf/pending/2.root.json",
    )
    for function in FUNCTIONS:
        for key in root_keys:
            for action in ("s3:PutObject", "s3:DeleteObject", "s3:PutObjectAcl"):
                assert not _may(template, function, action, _artifact_object(template, key)), (
                    function,
                    action,
                    key,
                )
    # The Deny is not the only thing that holds: the signers still write online metadata.
    for function in TUF_WRITERS:
        for key in ("models/tuf/metadata/timestamp.json", "models/tuf/metadata/7.snapshot.json"):
            assert _may(template, function, "s3:PutObject", _artifact_object(template, key))


def test_the_status_function_only_counts(template: Template) -> None:
    """Devices reach it through its rule: it holds no key, writes nothing devices fetch,
    publishes nothing and reads no stream. Exactly the calls its code makes."""
    statements = _role_statements(template, "Status")
    actions = {a for s in statements if s["Effect"] == "Allow" for a in _actions(s)}
    assert actions == {
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "dynamodb:GetItem",  # its recorded identity, the rollout
        "dynamodb:UpdateItem",  # the report, and the counted outcome's transaction
        "iot:DescribeThing",
        "iot:ListThingGroupsForThing",
    }
    assert not any(a.startswith(("kms:", "s3:", "iot:Publish", "iot:Retain")) for a in actions)
    function = _resources(template, "AWS::Lambda::Function")[
        _logical_id(template, "AWS::Lambda::Function", "IotWiringStatus")
    ]
    variables = function["Properties"]["Environment"]["Variables"]
    assert "SIGNING_KEY_ID" not in variables
    assert "ARTIFACT_BUCKET" not in variables


def test_counted_outcomes_reach_the_schedule_function_by_the_registry_stream(
    template: Template,
) -> None:
    registry = _logical_id(template, "AWS::DynamoDB::GlobalTable", "Registry")
    tables = _resources(template, "AWS::DynamoDB::GlobalTable")
    assert tables[registry]["Properties"]["StreamSpecification"] == {"StreamViewType": "KEYS_ONLY"}
    [mapping] = [
        m["Properties"]
        for m in _resources(template, "AWS::Lambda::EventSourceMapping").values()
        if "StreamArn" in json.dumps(m["Properties"]["EventSourceArn"])
    ]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [registry, "StreamArn"]}
    assert mapping["FunctionName"] == {
        "Ref": _logical_id(template, "AWS::Lambda::Function", "EvaluateRollouts")
    }
    [pattern] = [json.loads(f["Pattern"]) for f in mapping["FilterCriteria"]["Filters"]]
    assert pattern == STAGE_COUNTER_FILTER
    assert pattern["dynamodb"]["Keys"]["sk"] == {"S": [{"prefix": "tally#"}]}
    # Seconds, not the minute of the schedule: a small window, and a failing batch does
    # not hold the shard (the schedule evaluates everything each minute anyway).
    assert mapping["MaximumBatchingWindowInSeconds"] <= 1
    assert mapping["MaximumRetryAttempts"] <= 2
    assert mapping["StartingPosition"] == "LATEST"


def test_the_fleet_table_expires_the_grant_counters(template: Template) -> None:
    fleet = _logical_id(template, "AWS::DynamoDB::GlobalTable", "Fleet")
    table = _resources(template, "AWS::DynamoDB::GlobalTable")[fleet]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert TTL_ATTRIBUTE == "expires"


STREAM_ACTIONS = (
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:DescribeStream",
    "dynamodb:ListStreams",
)


def test_stream_actions_only_where_a_stream_is_read(template: Template) -> None:
    registry = _logical_id(template, "AWS::DynamoDB::GlobalTable", "Registry")
    readers = set()
    for logical, statement in _statements(template):
        if not any(a in STREAM_ACTIONS or a == "dynamodb:*" for a in _actions(statement)):
            continue
        readers.add(logical.split("ServiceRole")[0])
        assert statement["Resource"] == {"Fn::GetAtt": [registry, "StreamArn"]}, logical
    assert readers == {"IotWiringEvaluateRollouts"}
    tables = _resources(template, "AWS::DynamoDB::GlobalTable")
    assert [k for k, t in tables.items() if "StreamSpecification" in t["Properties"]] == [registry]


def test_no_grant_deletes_aborts_or_tags_objects_beyond_what_the_code_does(
    template: Template,
) -> None:
    """Each role lists exact actions, never CDK's action groups; the only deletes are the
    retrain's quarantine move of a bad upload out of data/, and the schedule's withdrawal
    of an aborted version's target files (never metadata)."""
    data = _logical_id(template, "AWS::S3::Bucket", "DataIntakeDataBucket")
    for logical, statement in _statements(template):
        if statement["Effect"] != "Allow":
            continue
        for action in _actions(statement):
            assert "*" not in action, (logical, action)
            assert not action.startswith("s3:Abort"), (logical, action)
            for group in ("Tagging", "LegalHold", "Retention"):
                assert group not in action, (logical, action)
            if action.startswith("s3:Delete"):
                assert action == "s3:DeleteObject", (logical, action)
                [resource] = _resource_list(statement)
                if logical.startswith("TrainingPipelineRetrain"):
                    assert data in resource, resource
                    assert resource.endswith("/data/*"), resource
                else:
                    assert logical.startswith("IotWiringEvaluateRollouts"), logical
                    assert resource.endswith("/models/tuf/targets/*"), resource
    # No function may delete the repository's metadata; only the schedule withdraws targets.
    target = _artifact_object(template, "models/tuf/targets/vibration/2/abc.model.tflite")
    for function in FUNCTIONS:
        for key in ("models/tuf/metadata/3.snapshot.json", "models/tuf/metadata/timestamp.json"):
            assert not _may(template, function, "s3:DeleteObject", _artifact_object(template, key))
        assert _may(template, function, "s3:DeleteObject", target) == (
            function == "EvaluateRollouts"
        ), function


def test_only_publishers_look_up_the_iot_data_endpoint(template: Template) -> None:
    lookers = {
        logical.split("ServiceRole")[0]
        for logical, statement in _statements(template)
        if "iot:DescribeEndpoint" in _actions(statement)
    }
    publishers = {
        logical.split("ServiceRole")[0]
        for logical, statement in _statements(template)
        if "iot:Publish" in _actions(statement)
    }
    assert lookers == publishers
    assert {p.removeprefix("IotWiring").removeprefix("TrainingPipeline") for p in lookers} == {
        "Presign",
        "Retrain",
        "Rollback",
        "EvaluateRollouts",
        "TrainingJobsDone",
    }


def _presence_rule(template: Template) -> dict[str, Any]:
    [rule] = [
        r["Properties"]
        for r in _resources(template, "AWS::IoT::TopicRule").values()
        if r["Properties"]["RuleName"] == RuleNames("edgeloop").presence
    ]
    return dict(rule)


def test_presence_is_written_by_the_rule_alone_from_the_lifecycle_events(
    template: Template,
) -> None:
    payload = _presence_rule(template)["TopicRulePayload"]
    assert payload["Sql"] == presence_sql()
    assert payload["Sql"] == (
        "SELECT clientId AS thing, eventType AS event, timestamp AS at_ms, "
        "versionNumber AS version, disconnectReason AS reason "
        "FROM '$aws/events/presence/+/+'"
    )
    [action] = payload["Actions"]
    # A DynamoDB write, no function: nothing runs per connect or disconnect.
    assert list(action) == ["DynamoDBv2"]
    table = _logical_id(template, "AWS::DynamoDB::GlobalTable", "PresenceTable")
    assert action["DynamoDBv2"]["PutItem"] == {"TableName": {"Ref": table}}
    # Its own table, keyed by thing and event type: the PutItem can replace neither
    # the fleet item nor the other event type's item.
    [props] = [
        r["Properties"]
        for k, r in _resources(template, "AWS::DynamoDB::GlobalTable").items()
        if k == table
    ]
    assert props["KeySchema"] == [
        {"AttributeName": "thing", "KeyType": "HASH"},
        {"AttributeName": "event", "KeyType": "RANGE"},
    ]


def test_the_presence_rules_role_may_only_put_items_in_the_presence_table(
    template: Template,
) -> None:
    role_ref = _presence_rule(template)["TopicRulePayload"]["Actions"][0]["DynamoDBv2"]["RoleArn"]
    role = role_ref["Fn::GetAtt"][0]
    [trust] = [
        r["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        for k, r in _resources(template, "AWS::IAM::Role").items()
        if k == role
    ]
    [assume] = trust
    assert assume["Principal"] == {"Service": "iot.amazonaws.com"}
    assert _joined(assume["Condition"]["ArnEquals"]["aws:SourceArn"]).endswith(
        ":rule/edgeloop_presence"
    )
    statements = [
        statement
        for policy in _resources(template, "AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    table = _logical_id(template, "AWS::DynamoDB::GlobalTable", "PresenceTable")
    assert statements == [
        {
            "Action": "dynamodb:PutItem",
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [table, "Arn"]},
        }
    ]
    # No function may write presence: it is the broker's word, not a device's.
    for logical, policy in _resources(template, "AWS::IAM::Policy").items():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            continue
        assert table not in json.dumps(policy["Properties"]["PolicyDocument"]), logical


def _role_policy(template: Template, fragment: str) -> str:
    """Every statement of the policies attached to the role whose logical id has `fragment`."""
    return json.dumps(
        [
            p["Properties"]["PolicyDocument"]
            for p in _resources(template, "AWS::IAM::Policy").values()
            if any(fragment in r["Ref"] for r in p["Properties"]["Roles"])
        ]
    )


def test_training_jobs_run_the_functions_image_with_a_role_that_reads_data_and_writes_output(
    template: Template,
) -> None:
    roles = _resources(template, "AWS::IAM::Role")
    [job_role] = [k for k in roles if k.startswith("TrainingJobsJobRole")]
    principal = roles[job_role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in principal] == [{"Service": "sagemaker.amazonaws.com"}]
    policy = json.loads(_role_policy(template, "TrainingJobsJobRole"))
    s3 = [
        (tuple(_actions(s)), _joined(s["Resource"]))
        for doc in policy
        for s in doc["Statement"]
        if any(a.startswith("s3:") for a in _actions(s)) and isinstance(s["Resource"], dict)
    ]
    reads = {"s3:GetObject", "s3:ListBucket"}
    writes = [resource for actions, resource in s3 if set(actions) - reads]
    # Writes only under a run's output prefix; nothing deletes, nothing writes data/ or registry/.
    assert writes
    assert all(w.endswith("/training/*/*/output/*") for w in writes)
    assert all(a in (*reads, "s3:PutObject") for actions, _ in s3 for a in actions)
    read = [r for a, r in s3 if a == ("s3:GetObject",)]
    assert any(r.endswith("/data/*") for r in read)
    assert any(r.endswith("/training/*/*/manifest.json") for r in read)
    # Of the registry, only estimators: never manifests, runs or models.
    assert [r.split("/", 1)[1] for r in read if "Registry" in r] == [
        "registry/*/versions/*/estimator.joblib"
    ]


def test_retrain_may_start_edgeloop_jobs_and_pass_only_the_job_role_to_sagemaker(
    template: Template,
) -> None:
    retrain = _logical_id(template, "AWS::Lambda::Function", "TrainingPipelineRetrain")
    env = _resources(template, "AWS::Lambda::Function")[retrain]["Properties"]["Environment"]
    job_role = _logical_id(template, "AWS::IAM::Role", "TrainingJobsJobRole")
    assert env["Variables"]["TRAINING_ROLE_ARN"] == {"Fn::GetAtt": [job_role, "Arn"]}
    assert "TRAINING_IMAGE_URI" in env["Variables"]
    statements = [
        s
        for doc in json.loads(_role_policy(template, "TrainingPipelineRetrain"))
        for s in doc["Statement"]
    ]
    [passing] = [s for s in statements if "iam:PassRole" in _actions(s)]
    assert passing["Resource"] == {"Fn::GetAtt": [job_role, "Arn"]}
    assert passing["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }
    [starting] = [s for s in statements if "sagemaker:CreateTrainingJob" in _actions(s)]
    assert _joined(starting["Resource"]).endswith(":training-job/el-*")
    # Only the completion function and retrain know the job role: no other function passes it.
    others = json.dumps(
        [
            p
            for p in _resources(template, "AWS::IAM::Policy").values()
            if not any("Retrain" in r["Ref"] for r in p["Properties"]["Roles"])
        ]
    )
    assert "iam:PassRole" not in others


def test_a_training_jobs_end_reaches_the_completion_function_for_this_stacks_jobs_only(
    template: Template,
) -> None:
    rules = _resources(template, "AWS::Events::Rule").values()
    [rule] = [r for r in rules if "EventPattern" in r["Properties"]]
    pattern = rule["Properties"]["EventPattern"]
    job_role = _logical_id(template, "AWS::IAM::Role", "TrainingJobsJobRole")
    assert pattern["source"] == ["aws.sagemaker"]
    assert pattern["detail-type"] == ["SageMaker Training Job State Change"]
    assert pattern["detail"]["TrainingJobStatus"] == ["Completed", "Failed", "Stopped"]
    assert pattern["detail"]["RoleArn"] == [{"Fn::GetAtt": [job_role, "Arn"]}]
    [target] = rule["Properties"]["Targets"]
    done = _logical_id(template, "AWS::Lambda::Function", "TrainingJobsDone")
    assert target["Arn"] == {"Fn::GetAtt": [done, "Arn"]}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 8
