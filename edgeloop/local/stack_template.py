"""The synthesized CloudFormation template as the local cloud's only source of deployment facts.

The local cloud does not restate the stack: it reads `cdk synth`'s template and
creates what the template declares (buckets, tables with their indexes, streams
and TTL, the uploads queue and its dead-letter queue, the S3 notification, the
online key, the canary thing group) in moto, under local physical names. Each
function's handler, environment, timeout, memory and role policy are read from
the same template, with every `Ref`, `Fn::GetAtt`, `Fn::Join` and `Fn::Sub`
resolved to those names. So a fact changed in `infra/` changes what the tests and
the local cloud run, and a statement removed from a role is an AccessDenied here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.contract.provisioning import POLICY_RESOURCE

ACCOUNT = "123456789012"  # moto's default account
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"

Client = Callable[[str], Any]


class TemplateError(Exception):
    """The template declares something the local cloud cannot stand in for."""


@dataclass(frozen=True)
class FunctionSpec:
    """One Lambda function as the template declares it, its references resolved."""

    logical_id: str
    handler: str
    environment: dict[str, str]
    timeout: int
    memory: int
    role: str  # the role's logical id
    statements: list[dict[str, Any]]

    @property
    def name(self) -> str:
        """`functions.retrain.handler.handler` is `retrain`."""
        parts = self.handler.split(".")
        return parts[1] if len(parts) == 4 and parts[0] == "functions" else self.logical_id


@dataclass(frozen=True)
class TopicRuleSpec:
    """An IoT topic rule that writes to DynamoDB (DynamoDBv2), as the template declares it."""

    name: str
    topic_filter: str
    fields: tuple[tuple[str, str], ...]  # (the message's field, the attribute it becomes)
    table: str
    role: str  # the role's logical id
    statements: list[dict[str, Any]]

    def select(self, message: dict[str, Any]) -> dict[str, Any]:
        """The SELECT: a field the message lacks is left out, as IoT SQL's Undefined is."""
        return {name: message[source] for source, name in self.fields if source in message}


@dataclass(frozen=True)
class ProvisioningSpec:
    """The stack's fleet provisioning template, as the template declares it."""

    name: str
    body: dict[str, Any]
    hook: str  # the hook function's short name
    statements: list[dict[str, Any]]  # the provisioning role's inline statements
    managed: tuple[str, ...]  # and the AWS managed policies it holds
    policy_document: dict[str, Any]  # the device policy the template attaches


_SELECT = re.compile(r"SELECT (?P<fields>.+) FROM '(?P<topic>[^']+)'")
_FIELD = re.compile(r"(?P<source>[A-Za-z_][A-Za-z0-9_]*)(?: AS (?P<name>[A-Za-z_][A-Za-z0-9_]*))?")


def parse_select(sql: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """`SELECT a AS b, c FROM 'topic'`: its topic filter and fields. Anything more (WHERE,
    functions, `*`) is refused rather than evaluated differently from IoT Core."""
    match = _SELECT.fullmatch(sql.strip())
    if match is None:
        raise TemplateError(f"the local rules engine cannot evaluate {sql!r}")
    fields: list[tuple[str, str]] = []
    for part in match["fields"].split(","):
        field_match = _FIELD.fullmatch(part.strip())
        if field_match is None:
            raise TemplateError(f"the local rules engine cannot select {part.strip()!r} ({sql!r})")
        fields.append((field_match["source"], field_match["name"] or field_match["source"]))
    return match["topic"], tuple(fields)


class StackTemplate:
    """A synthesized template: what it declares, before anything is created."""

    def __init__(self, template: dict[str, Any], stack_name: str = "edgeloop") -> None:
        self.template = template
        self.stack_name = stack_name
        self.resources: dict[str, dict[str, Any]] = template.get("Resources", {})

    @classmethod
    def load(cls, path: Path) -> StackTemplate:
        try:
            template = json.loads(path.read_text())
        except FileNotFoundError:
            raise TemplateError(
                f"no synthesized template at {path}: build it with `make lambda-task-local`"
            ) from None
        except json.JSONDecodeError as exc:
            raise TemplateError(f"{path} is not a CloudFormation template: {exc}") from None
        name = path.name.removesuffix(".template.json")
        return cls(template, stack_name=name)

    def of_type(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for logical_id, resource in self.resources.items():
            if resource["Type"] == kind:
                yield logical_id, resource.get("Properties", {})

    def lambda_functions(self) -> list[str]:
        """The image functions (the ones the functions image runs), not CDK's own helpers."""
        return [
            logical_id
            for logical_id, props in self.of_type("AWS::Lambda::Function")
            if props.get("PackageType") == "Image"
        ]


def _slug(logical_id: str) -> str:
    """A logical id as a lower-case name fragment (buckets allow no capitals)."""
    return re.sub(r"[^a-z0-9-]", "", logical_id.lower())[:40]


class LocalStack:
    """The template's resources created in moto, and every reference resolved to them."""

    def __init__(self, template: StackTemplate, prefix: str, region: str) -> None:
        self.template = template
        self.prefix = prefix
        self.region = region
        self._refs: dict[str, str] = {}
        self._arns: dict[str, str] = {}

    # -- creating -----------------------------------------------------------------

    def create(self, client: Client, queue_visibility: int | None = None) -> LocalStack:
        """Create every resource the functions touch, in dependency order.

        `queue_visibility` shortens the uploads queue's visibility timeout: the stack
        sets it to six times the retrain timeout (90 minutes) so a slow run is never
        delivered twice; locally a failed run should come back in seconds.
        """
        s3, ddb, sqs, kms, iot = (client(s) for s in ("s3", "dynamodb", "sqs", "kms", "iot"))
        for logical_id, props in self.template.of_type("AWS::S3::Bucket"):
            name = f"{self.prefix}-{_slug(logical_id)}"[:63].rstrip("-")
            s3.create_bucket(
                Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.region}
            )
            if props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
                s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
            self._refs[logical_id] = name
            self._arns[logical_id] = f"arn:{PARTITION}:s3:::{name}"
        for logical_id, props in self.template.of_type("AWS::DynamoDB::GlobalTable"):
            self._create_table(ddb, logical_id, props)
        # Dead-letter queues first: a queue's redrive policy names its DLQ's ARN.
        queues = sorted(
            self.template.of_type("AWS::SQS::Queue"), key=lambda q: "RedrivePolicy" in q[1]
        )
        for logical_id, props in queues:
            self._create_queue(sqs, logical_id, props, queue_visibility)
        for logical_id, props in self.template.of_type("AWS::KMS::Key"):
            key = kms.create_key(
                KeySpec=props.get("KeySpec", "SYMMETRIC_DEFAULT"),
                KeyUsage=props.get("KeyUsage", "ENCRYPT_DECRYPT"),
                Description=props.get("Description", ""),
            )["KeyMetadata"]
            self._refs[logical_id] = key["KeyId"]
            self._arns[logical_id] = key["Arn"]
        for logical_id, props in self.template.of_type("AWS::IoT::ThingGroup"):
            name = self.resolve(props["ThingGroupName"])
            try:
                group = iot.create_thing_group(thingGroupName=name)
            except iot.exceptions.ResourceAlreadyExistsException:
                group = iot.describe_thing_group(thingGroupName=name)
            self._refs[logical_id] = name
            self._arns[logical_id] = group["thingGroupArn"]
        # Named by the template itself (the stack's name is in them), as IoT Core keeps
        # them; the stack's outputs name them to the operator's tools.
        for kind, key, resource in (
            ("AWS::IoT::Policy", "PolicyName", "policy"),
            ("AWS::IoT::ProvisioningTemplate", "TemplateName", "provisioningtemplate"),
        ):
            for logical_id, props in self.template.of_type(kind):
                name = str(self.resolve(props[key]))
                self._refs[logical_id] = name
                self._arns[logical_id] = (
                    f"arn:{PARTITION}:iot:{self.region}:{ACCOUNT}:{resource}/{name}"
                )
        for _, props in self.template.of_type("Custom::S3BucketNotifications"):
            s3.put_bucket_notification_configuration(
                Bucket=self.resolve(props["BucketName"]),
                NotificationConfiguration=self.resolve(props["NotificationConfiguration"]),
            )
        for logical_id, _ in self.template.of_type("AWS::Lambda::Function"):
            name = f"{self.prefix}-{_slug(logical_id)}"[:64]
            self._refs[logical_id] = name
            self._arns[logical_id] = (
                f"arn:{PARTITION}:lambda:{self.region}:{ACCOUNT}:function:{name}"
            )
        for logical_id, _ in self.template.of_type("AWS::IAM::Role"):
            self._refs[logical_id] = f"{self.prefix}-{_slug(logical_id)}"[:64]
            self._arns[logical_id] = f"arn:{PARTITION}:iam::{ACCOUNT}:role/{self._refs[logical_id]}"
        return self

    def _create_table(self, ddb: Any, logical_id: str, props: dict[str, Any]) -> None:
        name = f"{self.prefix}-{_slug(logical_id)}"
        spec: dict[str, Any] = {
            "TableName": name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if "GlobalSecondaryIndexes" in props:
            spec["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        if "StreamSpecification" in props:
            spec["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
        description = ddb.create_table(**spec)["TableDescription"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            ddb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
            )
        self._refs[logical_id] = name
        self._arns[logical_id] = description["TableArn"]
        if "LatestStreamArn" in description:
            self._arns[f"{logical_id}.StreamArn"] = description["LatestStreamArn"]

    def _create_queue(
        self, sqs: Any, logical_id: str, props: dict[str, Any], visibility: int | None
    ) -> None:
        attributes: dict[str, str] = {}
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = json.dumps(self.resolve(props["RedrivePolicy"]))
        if "VisibilityTimeout" in props:
            attributes["VisibilityTimeout"] = str(
                visibility if visibility is not None else props["VisibilityTimeout"]
            )
        if "MessageRetentionPeriod" in props:
            attributes["MessageRetentionPeriod"] = str(props["MessageRetentionPeriod"])
        name = f"{self.prefix}-{_slug(logical_id)}"[:80]
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        self._refs[logical_id] = url
        self._arns[logical_id] = f"arn:{PARTITION}:sqs:{self.region}:{ACCOUNT}:{name}"

    def attach(self, refs: dict[str, str], arns: dict[str, str]) -> LocalStack:
        """Resolve to resources `create` made in an earlier run (their `refs`, `arns`)."""
        self._refs = dict(refs)
        self._arns = dict(arns)
        return self

    @property
    def refs(self) -> dict[str, str]:
        return dict(self._refs)

    @property
    def arns(self) -> dict[str, str]:
        return dict(self._arns)

    # -- resolving ----------------------------------------------------------------

    def ref(self, logical_id: str) -> str:
        pseudo = {
            "AWS::Partition": PARTITION,
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT,
            "AWS::URLSuffix": URL_SUFFIX,
            "AWS::StackName": self.template.stack_name,
        }
        if logical_id in pseudo:
            return pseudo[logical_id]
        try:
            return self._refs[logical_id]
        except KeyError:
            kind = self.template.resources.get(logical_id, {}).get("Type", "not in the template")
            raise TemplateError(
                f"{logical_id} is referenced but has no local stand-in ({kind})"
            ) from None

    def arn(self, logical_id: str, attribute: str = "Arn") -> str:
        key = logical_id if attribute == "Arn" else f"{logical_id}.{attribute}"
        try:
            return self._arns[key]
        except KeyError:
            raise TemplateError(f"{logical_id}.{attribute} has no local stand-in") from None

    def resolve(self, value: Any) -> Any:
        """A template value with its intrinsic functions evaluated."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                return self.arn(arg[0], arg[1])
            if key == "Fn::Join":
                return arg[0].join(str(self.resolve(part)) for part in arg[1])
            if key == "Fn::Sub":
                return re.sub(r"\$\{([^}]+)\}", lambda m: self._sub(m.group(1)), arg)
            if key == "Fn::Select":
                return self.resolve(arg[1])[int(arg[0])]
            if key.startswith("Fn::"):
                raise TemplateError(f"{key} is not supported by the local cloud")
        return {k: self.resolve(v) for k, v in value.items()}

    def _sub(self, name: str) -> str:
        if "." in name:
            logical_id, attribute = name.split(".", 1)
            return self.arn(logical_id, attribute)
        return self.ref(name)

    # -- reading ------------------------------------------------------------------

    def function(self, logical_id: str) -> FunctionSpec:
        props = self.template.resources[logical_id]["Properties"]
        role = props["Role"]["Fn::GetAtt"][0]
        return FunctionSpec(
            logical_id=logical_id,
            handler=props["ImageConfig"]["Command"][0],
            environment={
                k: str(self.resolve(v))
                for k, v in props.get("Environment", {}).get("Variables", {}).items()
            },
            timeout=int(props.get("Timeout", 3)),
            memory=int(props.get("MemorySize", 128)),
            role=role,
            statements=self.role_statements(role),
        )

    def functions(self) -> dict[str, FunctionSpec]:
        """Every image function by its short name (`retrain`, `status`, ...)."""
        specs = [self.function(logical_id) for logical_id in self.template.lambda_functions()]
        return {spec.name: spec for spec in specs}

    def role_statements(self, role: str) -> list[dict[str, Any]]:
        """Every statement of every inline policy the template attaches to `role`."""
        statements: list[dict[str, Any]] = []
        for _, props in self.template.of_type("AWS::IAM::Policy"):
            if {"Ref": role} in props.get("Roles", []):
                statements.extend(self.resolve(props["PolicyDocument"]["Statement"]))
        return statements

    def provisioning(self) -> ProvisioningSpec | None:
        """The fleet provisioning template as deployed: its name, body, hook function and
        role, and the body of the IoT policy it attaches; None if the stack has none."""
        found = list(self.template.of_type("AWS::IoT::ProvisioningTemplate"))
        if not found:
            return None
        _, props = found[0]
        body = json.loads(self.resolve(props["TemplateBody"]))
        hook = props["PreProvisioningHook"]["TargetArn"]["Fn::GetAtt"][0]
        policy_name = body["Resources"][POLICY_RESOURCE]["Properties"]["PolicyName"]
        policy = next(
            self.resolve(p["PolicyDocument"])
            for _, p in self.template.of_type("AWS::IoT::Policy")
            if self.resolve(p.get("PolicyName")) == policy_name
        )
        role = props["ProvisioningRoleArn"]["Fn::GetAtt"][0]
        managed = self.template.resources[role]["Properties"].get("ManagedPolicyArns", [])
        return ProvisioningSpec(
            name=self.resolve(props["TemplateName"]),
            body=body,
            hook=self.function(hook).name,
            statements=self.role_statements(role),
            managed=tuple(str(self.resolve(arn)) for arn in managed),
            policy_document=policy,
        )

    def dynamodb_rules(self) -> list[TopicRuleSpec]:
        """The topic rules whose action is a DynamoDBv2 PutItem, with their roles' statements.

        The rules that invoke functions are routed by name (`edgeloop.local.router`)."""
        rules: list[TopicRuleSpec] = []
        for _, props in self.template.of_type("AWS::IoT::TopicRule"):
            payload = props["TopicRulePayload"]
            actions = payload.get("Actions", [])
            if not any("DynamoDBv2" in action for action in actions):
                continue
            if len(actions) != 1 or list(actions[0]) != ["DynamoDBv2"]:
                raise TemplateError(f"rule {props['RuleName']}: one DynamoDBv2 action only")
            action = actions[0]["DynamoDBv2"]
            topic_filter, fields = parse_select(payload["Sql"])
            role = action["RoleArn"]["Fn::GetAtt"][0]
            rules.append(
                TopicRuleSpec(
                    name=str(self.resolve(props["RuleName"])),
                    topic_filter=topic_filter,
                    fields=fields,
                    table=str(self.resolve(action["PutItem"]["TableName"])),
                    role=role,
                    statements=self.role_statements(role),
                )
            )
        return rules

    def output(self, key: str) -> str | None:
        """The stack output `key` as the local cloud names it; None when the template has
        no such output (built before it existed)."""
        output = self.template.template.get("Outputs", {}).get(key)
        return None if output is None else str(self.resolve(output["Value"]))

    def role_with_arn(self, arn: str) -> str | None:
        """The logical id of the template's role that has this (local) ARN."""
        for logical_id, _ in self.template.of_type("AWS::IAM::Role"):
            if self._arns.get(logical_id) == arn:
                return logical_id
        return None

    def event_source(self, function: str) -> str:
        """The ARN an event source mapping feeds `function` from."""
        for _, props in self.template.of_type("AWS::Lambda::EventSourceMapping"):
            if props.get("FunctionName") == {"Ref": function}:
                return str(self.resolve(props["EventSourceArn"]))
        raise TemplateError(f"{function} has no event source mapping in the template")

    def queue_url(self, arn: str) -> str:
        for logical_id, _ in self.template.of_type("AWS::SQS::Queue"):
            if self._arns.get(logical_id) == arn:
                return self._refs[logical_id]
        raise TemplateError(f"no queue {arn} in the template")
