"""Provisioning by claim: the allow-list, the hook that reads it, the fleet provisioning
template, and the claim certificate's policy.

A device holding the factory's claim certificate may only ask for its own
certificate and register itself (`edgeloop.contract.provisioning.claim_grants`).
IoT Core asks the hook whether its serial is on the allow-list; only then does
the template create the thing (model attribute, thing group) and give the new
certificate the device policy.
"""

from __future__ import annotations

import json

from aws_cdk import Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from constructs import Construct

from edgeloop.contract.provisioning import claim_grants, provisioning_template, template_name
from functions.common.admission import KEY as ADMISSION_KEY
from infra.constructs.iot_wiring import policy_document
from infra.constructs.nag import suppress
from infra.constructs.storage import allow_items, durable_table
from infra.constructs.training_pipeline import tracked_function

# IoT Core waits 5 seconds for the hook's answer, then refuses the device.
HOOK_TIMEOUT = Duration.seconds(5)
HOOK_PAYLOAD_VERSION = "2020-04-01"
# AWS's policy for a provisioning template's role: create the thing, attach the
# policy and the certificate, activate it.
THINGS_REGISTRATION = "service-role/AWSIoTThingsRegistration"


def fleet_group_name(stack: Stack) -> str:
    """The thing group every admitted device that is not a named canary joins."""
    return f"{stack.stack_name}-fleet-devices"


class Provisioning(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        device_policy: iot.CfnPolicy,
        canary_group: str,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        arn = f"arn:{stack.partition}:iot:{stack.region}:{stack.account}"
        self.template_name = template_name(stack.stack_name)
        self.admission_table = durable_table(self, "Admissions", partition_key=ADMISSION_KEY)
        self.fleet_group_name = fleet_group_name(stack)
        self.fleet_group = iot.CfnThingGroup(
            self, "FleetDevices", thing_group_name=self.fleet_group_name
        )
        self.hook = tracked_function(
            self,
            "ProvisioningHook",
            handler="functions.provisioning_hook.handler.handler",
            timeout=HOOK_TIMEOUT,
            memory=256,
            environment={
                "ADMISSION_TABLE": self.admission_table.table_name,
                "CANARY_GROUP": canary_group,
                "FLEET_GROUP": self.fleet_group_name,
            },
        )
        # The hook only reads the allow-list (the platform team writes it), and whether
        # the serial's thing already holds an active certificate.
        allow_items(self.hook, self.admission_table, "GetItem")
        self.hook.add_to_role_policy(
            iam.PolicyStatement(actions=["iot:ListThingPrincipals"], resources=[f"{arn}:thing/*"])
        )
        self.hook.add_to_role_policy(
            iam.PolicyStatement(actions=["iot:DescribeCertificate"], resources=[f"{arn}:cert/*"])
        )
        template_arn = f"{arn}:provisioningtemplate/{self.template_name}"
        # Only IoT Core acting for this account's template may invoke it (confused deputy).
        self.hook.add_permission(
            "ProvisioningTemplateInvoke",
            principal=iam.ServicePrincipal("iot.amazonaws.com"),
            source_account=stack.account,
            source_arn=template_arn,
        )
        self.role = iam.Role(
            self,
            "ProvisioningRole",
            assumed_by=iam.ServicePrincipal(
                "iot.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            ),
            description="the fleet provisioning template creates things and activates "
            "their certificates with this role",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(THINGS_REGISTRATION)],
        )
        suppress(
            self.role,
            "AwsSolutions-IAM4",
            "AWSIoTThingsRegistration is AWS's documented role policy for fleet provisioning "
            "templates, and only IoT Core acting for this account may assume the role",
            [f"Policy::arn:<AWS::Partition>:iam::aws:policy/{THINGS_REGISTRATION}"],
        )
        self.template = iot.CfnProvisioningTemplate(
            self,
            "Template",
            template_name=self.template_name,
            description="devices holding the claim certificate register themselves here, "
            "when the hook finds their serial on the allow-list",
            enabled=True,
            provisioning_role_arn=self.role.role_arn,
            template_body=json.dumps(provisioning_template(str(device_policy.policy_name))),
            pre_provisioning_hook=iot.CfnProvisioningTemplate.ProvisioningHookProperty(
                target_arn=self.hook.function_arn, payload_version=HOOK_PAYLOAD_VERSION
            ),
        )
        # IoT Core checks that it may invoke the hook, and act as the role, when the
        # template is created.
        self.template.node.add_dependency(self.hook.node.find_child("ProvisioningTemplateInvoke"))
        self.template.node.add_dependency(self.role)
        self.claim_policy = iot.CfnPolicy(
            self,
            "ClaimPolicy",
            policy_name=f"{stack.stack_name}-claim",
            policy_document=policy_document(
                stack.partition, stack.region, stack.account, claim_grants(self.template_name)
            ),
        )
