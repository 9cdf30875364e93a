"""IoT wiring: the device policy, the topic rules, the named canaries, and who may publish what."""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from constructs import Construct

from edgeloop.contract.device_policy import DeviceAction, DeviceGrant, device_grants
from edgeloop.contract.topics import ROOT, RuleNames
from functions.common.presence import presence_sql
from functions.common.registry import STAGE_COUNTER_FILTER
from functions.common.rules import rule_sql
from infra.constructs.artifact_hosting import ArtifactHosting
from infra.constructs.data_intake import DataIntake
from infra.constructs.signing import Signing
from infra.constructs.storage import allow_items, allow_objects, durable_table
from infra.constructs.training_pipeline import (
    TrainingPipeline,
    canary_group_name,
    tracked_function,
)

# Counted outcomes reach the schedule function in batches: a burst of reports from a
# stage becomes one evaluation per model, a second after the first of them.
STREAM_BATCH_SIZE = 1000
STREAM_BATCHING_WINDOW = Duration.seconds(1)

# Where the cloud publishes nudges: every model's bands, and each named canary's own
# topic. A nudge is never the authority (the signed pointer is).
ANNOUNCEMENTS = f"{ROOT}/models/*/bands/*/nudge"
CANARY_ANNOUNCEMENTS = f"{ROOT}/things/*/nudge"

# How each device action is written in an IoT policy: its action, and the resource
# kind its names are.
_IOT_ACTIONS = {
    DeviceAction.CONNECT: ("iot:Connect", "client"),
    DeviceAction.PUBLISH: ("iot:Publish", "topic"),
    DeviceAction.SUBSCRIBE: ("iot:Subscribe", "topicfilter"),
    DeviceAction.RECEIVE: ("iot:Receive", "topic"),
}


def policy_document(
    partition: str, region: str, account: str, grants: Iterable[DeviceGrant]
) -> dict[str, object]:
    """Grants (`edgeloop.contract.device_policy`'s shape) as IoT policy statements: the
    device policy's and the claim certificate's are rendered the same way."""
    arn = f"arn:{partition}:iot:{region}:{account}"
    statements: list[dict[str, object]] = []
    for grant in grants:
        action, kind = _IOT_ACTIONS[grant.action]
        resources = [f"{arn}:{kind}/{name}" for name in grant.names]
        statement: dict[str, object] = {
            "Effect": "Allow",
            "Action": action,
            "Resource": resources[0] if len(resources) == 1 else resources,
        }
        if grant.attached_thing_only:
            statement["Condition"] = {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}
        statements.append(statement)
    return {"Version": "2012-10-17", "Statement": statements}


def device_policy_document(
    partition: str, region: str, account: str, rules: RuleNames
) -> dict[str, object]:
    """The device policy: `edgeloop.contract.device_policy`'s grants as IoT policy statements."""
    return policy_document(partition, region, account, device_grants(rules))


class IotWiring(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        intake: DataIntake,
        hosting: ArtifactHosting,
        pipeline: TrainingPipeline,
        signing: Signing,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        # Devices name the rules (Basic Ingest), so the names are fixed by the stack's
        # name as the contract derives them; agents are configured with the same name.
        self.rule_names = RuleNames(stack.stack_name)
        self.policy = iot.CfnPolicy(
            self,
            "DevicePolicy",
            policy_name=f"{stack.stack_name}-device",
            policy_document=device_policy_document(
                stack.partition, stack.region, stack.account, self.rule_names
            ),
        )
        # Who a device is (its model, whether it is a named canary) is read from
        # the thing registry, never from what the device sends; every other
        # device's rollout stage follows from its thing name.
        canary_group = canary_group_name(stack)
        self.canaries = iot.CfnThingGroup(self, "NamedCanaries", thing_group_name=canary_group)
        self.presign = tracked_function(
            self,
            "Presign",
            handler="functions.presign.handler.handler",
            timeout=Duration.seconds(10),
            memory=512,
            environment={
                "DATA_BUCKET": intake.bucket.bucket_name,
                "FLEET_TABLE": pipeline.fleet_table.table_name,
                "CANARY_GROUP": canary_group,
            },
        )
        # The presigned POST is signed with this role: it can create objects under data/.
        allow_objects(self.presign, intake.bucket, "data/", "PutObject")
        # One conditional update per grant on the device's own counter item, and the
        # device's recorded identity read from its item.
        allow_items(self.presign, pipeline.fleet_table, "GetItem", "UpdateItem")
        self._may_read_identities(self.presign)
        self._may_publish(self.presign, [f"{ROOT}/things/*/upload/response"], retain=False)
        # Devices reach the status function (through its rule): it only counts. It
        # records the report and the outcome in one transaction on the device's item
        # and its stage's counter, and holds no key, writes nothing devices fetch and
        # publishes nothing.
        self.status = tracked_function(
            self,
            "Status",
            handler="functions.status.handler.handler",
            timeout=Duration.seconds(30),
            memory=512,
            environment={
                "REGISTRY_TABLE": pipeline.registry_table.table_name,
                "FLEET_TABLE": pipeline.fleet_table.table_name,
                "CANARY_GROUP": canary_group,
            },
        )
        allow_items(self.status, pipeline.fleet_table, "GetItem", "UpdateItem")
        allow_items(self.status, pipeline.registry_table, "GetItem", "UpdateItem")
        self._may_read_identities(self.status)
        # The schedule decides stages and signs them, where no device can reach: every
        # minute, and within seconds of a counted outcome through the registry's stream.
        self.evaluate_rollouts = tracked_function(
            self,
            "EvaluateRollouts",
            handler="functions.evaluate_rollouts.handler.handler",
            timeout=Duration.seconds(60),
            memory=512,
            environment={
                "REGISTRY_TABLE": pipeline.registry_table.table_name,
                "FLEET_TABLE": pipeline.fleet_table.table_name,
                "ARTIFACT_BUCKET": hosting.bucket.bucket_name,
                "SIGNING_KEY_ID": signing.key.key_arn,
                "CANARY_GROUP": canary_group,
            },
        )
        allow_items(self.evaluate_rollouts, pipeline.registry_table, "GetItem", "PutItem")
        # A run handed to a training job that never reported is ended by the schedule:
        # it reads each model's recent runs.
        allow_items(self.evaluate_rollouts, pipeline.registry_table, "Query")
        # Entering a stage asks whether it has devices; the named canaries' identities.
        allow_items(self.evaluate_rollouts, pipeline.fleet_table, "GetItem", "Query", indexes=True)
        # It signs rollout pointers and re-signs the timestamp.
        hosting.may_write_repository(self.evaluate_rollouts)
        # An abort it publishes withdraws the aborted version's files.
        hosting.may_withdraw_targets(self.evaluate_rollouts)
        signing.allow_signing(self.evaluate_rollouts)
        self._may_read_identities(self.evaluate_rollouts, canary_group)
        events.Rule(
            self,
            "EveryMinute",
            schedule=events.Schedule.rate(Duration.minutes(1)),
            targets=[targets.LambdaFunction(self.evaluate_rollouts)],
        )
        self.evaluate_rollouts.add_event_source(
            sources.DynamoEventSource(
                pipeline.registry_table,
                starting_position=lambda_.StartingPosition.LATEST,
                filters=[lambda_.FilterCriteria.filter(STAGE_COUNTER_FILTER)],
                batch_size=STREAM_BATCH_SIZE,
                max_batching_window=STREAM_BATCHING_WINDOW,
                # The schedule evaluates every model each minute anyway: a batch that
                # keeps failing is dropped after two retries instead of holding the shard.
                retry_attempts=2,
            )
        )
        for function in pipeline.publishers:
            self._may_read_identities(function, canary_group)
        for function in (*pipeline.publishers, self.evaluate_rollouts):
            self._may_publish(function, [ANNOUNCEMENTS, CANARY_ANNOUNCEMENTS], retain=True)
        # Each rule keeps its FROM topic, so agents publishing on the plain topic (not yet
        # upgraded, or told not to use Basic Ingest) still reach it; a Basic Ingest
        # publish reaches it by name.
        self.upload_rule = self._rule(
            "UploadRequests",
            self.rule_names.upload_requests,
            f"{ROOT}/things/+/upload/request",
            self.presign,
        )
        self.status_rule = self._rule(
            "StatusReports", self.rule_names.status, f"{ROOT}/things/+/status", self.status
        )
        self._presence()

    def _presence(self) -> None:
        """IoT Core's connect and disconnect events, written to the presence table by the
        rule itself (DynamoDBv2: a PutItem of the selected fields), no function per event.

        One item per thing and event type, so a late event cannot overwrite a newer
        one of the other type; the reader compares the two
        (`functions.common.presence`)."""
        stack = Stack.of(self)
        self.presence_table = durable_table(
            self, "PresenceTable", partition_key="thing", sort_key="event"
        )
        name = self.rule_names.presence
        rule_arn = f"arn:{stack.partition}:iot:{stack.region}:{stack.account}:rule/{name}"
        # Only this rule of this account may act as the role (confused deputy).
        self.presence_role = iam.Role(
            self,
            "PresenceRuleRole",
            assumed_by=iam.ServicePrincipal(
                "iot.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnEquals": {"aws:SourceArn": rule_arn},
                },
            ),
            description="the presence rule writes lifecycle events to the presence table",
        )
        self.presence_role.add_to_policy(
            iam.PolicyStatement(
                actions=["dynamodb:PutItem"], resources=[self.presence_table.table_arn]
            )
        )
        self.presence_rule = iot.CfnTopicRule(
            self,
            "Presence",
            rule_name=name,
            topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
                sql=presence_sql(),
                aws_iot_sql_version="2016-03-23",
                rule_disabled=False,
                actions=[
                    iot.CfnTopicRule.ActionProperty(
                        dynamo_d_bv2=iot.CfnTopicRule.DynamoDBv2ActionProperty(
                            put_item=iot.CfnTopicRule.PutItemInputProperty(
                                table_name=self.presence_table.table_name
                            ),
                            role_arn=self.presence_role.role_arn,
                        )
                    )
                ],
            ),
        )
        # The role must hold its policy before the rule first writes with it.
        self.presence_rule.node.add_dependency(self.presence_role)

    def _may_read_identities(
        self, function: lambda_.IFunction, canary_group: str | None = None
    ) -> None:
        """Look up things; with `canary_group`, also list the named canaries."""
        stack = Stack.of(self)
        arn = f"arn:{stack.partition}:iot:{stack.region}:{stack.account}"
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["iot:DescribeThing", "iot:ListThingGroupsForThing"],
                resources=[f"{arn}:thing/*"],
            )
        )
        if canary_group is not None:
            function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["iot:ListThingsInThingGroup"],
                    resources=[f"{arn}:thinggroup/{canary_group}"],
                )
            )

    def _may_publish(self, function: lambda_.IFunction, topics: list[str], retain: bool) -> None:
        """Publish on `topics` through the IoT data plane, whose account endpoint it looks
        up first (DescribeEndpoint accepts no narrower resource)."""
        stack = Stack.of(self)
        actions = ["iot:Publish", "iot:RetainPublish"] if retain else ["iot:Publish"]
        function.add_to_role_policy(
            iam.PolicyStatement(actions=["iot:DescribeEndpoint"], resources=["*"])
        )
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=actions,
                resources=[
                    f"arn:{stack.partition}:iot:{stack.region}:{stack.account}:topic/{t}"
                    for t in topics
                ],
            )
        )

    def _rule(
        self, id: str, name: str, topic_filter: str, function: lambda_.IFunction
    ) -> iot.CfnTopicRule:
        rule = iot.CfnTopicRule(
            self,
            id,
            rule_name=name,
            topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
                sql=rule_sql(topic_filter),
                aws_iot_sql_version="2016-03-23",
                rule_disabled=False,
                actions=[
                    iot.CfnTopicRule.ActionProperty(
                        lambda_=iot.CfnTopicRule.LambdaActionProperty(
                            function_arn=function.function_arn
                        )
                    )
                ],
            ),
        )
        function.add_permission(
            f"{id}Invoke",
            principal=iam.ServicePrincipal("iot.amazonaws.com"),
            source_arn=rule.attr_arn,
        )
        return rule
