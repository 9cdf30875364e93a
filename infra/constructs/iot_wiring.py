"""IoT wiring: the device policy, the topic rules, the named canaries, and who may publish what."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from edgeloop.contract.topics import ROOT, RuleNames, ingest_topic
from functions.common.rules import rule_sql
from infra.constructs.artifact_hosting import ArtifactHosting
from infra.constructs.data_intake import DataIntake
from infra.constructs.signing import Signing
from infra.constructs.training_pipeline import (
    TrainingPipeline,
    canary_group_name,
    tracked_function,
)

THING = "${iot:Connection.Thing.ThingName}"
# A rollout's nudges to refresh: one retained topic per model and 1% band, and each
# named canary's own. A nudge is never the authority (the signed pointer is).
ANNOUNCEMENTS = f"{ROOT}/models/*/bands/*/nudge"
CANARY_ANNOUNCEMENTS = f"{ROOT}/things/*/nudge"


def device_policy_document(
    partition: str, region: str, account: str, rules: RuleNames
) -> dict[str, object]:
    """Each device connects as its own thing, publishes only on its own topics, and may
    subscribe to its upload answers and to the nudges, nothing else.

    Status reports and upload requests may also go by Basic Ingest, to the one rule
    that consumes each and only on the thing's own topic: the rule's `topic(3)` is
    then the connection's thing name, as on the plain topic. The plain topics stay
    for agents that do not use Basic Ingest yet.
    """
    arn = f"arn:{partition}:iot:{region}:{account}"
    own = f"{ROOT}/things/{THING}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": f"{arn}:client/{THING}",
                "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}},
            },
            {
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": [
                    f"{arn}:topic/{own}/upload/request",
                    f"{arn}:topic/{own}/status",
                    f"{arn}:topic/{own}/events",
                    f"{arn}:topic/{ingest_topic(rules.upload_requests, f'{own}/upload/request')}",
                    f"{arn}:topic/{ingest_topic(rules.status, f'{own}/status')}",
                ],
            },
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": [
                    f"{arn}:topicfilter/{own}/upload/response",
                    f"{arn}:topicfilter/{ANNOUNCEMENTS}",
                    f"{arn}:topicfilter/{own}/nudge",
                ],
            },
            {
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": [
                    f"{arn}:topic/{own}/upload/response",
                    f"{arn}:topic/{ANNOUNCEMENTS}",
                    f"{arn}:topic/{own}/nudge",
                ],
            },
        ],
    }


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
        rollout_env = {
            "REGISTRY_TABLE": pipeline.registry_table.table_name,
            "FLEET_TABLE": pipeline.fleet_table.table_name,
            "ARTIFACT_BUCKET": hosting.bucket.bucket_name,
            "SIGNING_KEY_ID": signing.key.key_arn,
            "CANARY_GROUP": canary_group,
        }
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
        intake.bucket.grant_put(self.presign, "data/*")
        # One conditional update per grant on the device's own counter item, and the
        # device's recorded identity read from its item.
        pipeline.fleet_table.grant(self.presign, "dynamodb:UpdateItem", "dynamodb:GetItem")
        self.status = tracked_function(
            self,
            "Status",
            handler="functions.status.handler.handler",
            timeout=Duration.seconds(30),
            memory=512,
            environment=rollout_env,
        )
        self.evaluate_rollouts = tracked_function(
            self,
            "EvaluateRollouts",
            handler="functions.evaluate_rollouts.handler.handler",
            timeout=Duration.seconds(60),
            memory=512,
            environment=rollout_env,
        )
        for function in (self.status, self.evaluate_rollouts):
            pipeline.fleet_table.grant_read_write_data(function)
            pipeline.registry_table.grant_read_write_data(function)
            # Both sign the rollout pointer into the TUF repository (the schedule also
            # re-signs the timestamp); neither writes anything else devices fetch.
            hosting.bucket.grant_read_write(function, "models/tuf/*")
            signing.allow_signing(function)
        pipeline.fleet_table.grant_read_write_data(self.status)
        self._may_read_identities(self.presign)
        for function in (pipeline.retrain, pipeline.rollback, self.status, self.evaluate_rollouts):
            self._may_read_identities(function, canary_group)
        events.Rule(
            self,
            "EveryMinute",
            schedule=events.Schedule.rate(Duration.minutes(1)),
            targets=[targets.LambdaFunction(self.evaluate_rollouts)],
        )
        self._may_publish(self.presign, [f"{ROOT}/things/*/upload/response"], retain=False)
        for function in (pipeline.retrain, pipeline.rollback, self.status, self.evaluate_rollouts):
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
        stack = Stack.of(self)
        actions = ["iot:Publish", "iot:RetainPublish"] if retain else ["iot:Publish"]
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
