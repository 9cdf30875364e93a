"""The edgeloop stack, read top to bottom as the loop: intake, signing, hosting, training,
IoT wiring, provisioning by claim, monitoring."""

from __future__ import annotations

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from infra.constructs.artifact_hosting import ArtifactHosting
from infra.constructs.data_intake import DataIntake
from infra.constructs.iot_wiring import IotWiring
from infra.constructs.monitoring import Monitoring
from infra.constructs.nag import suppress
from infra.constructs.provisioning import Provisioning
from infra.constructs.signing import Signing
from infra.constructs.training_jobs import TrainingJobs
from infra.constructs.training_pipeline import TrainingPipeline, canary_group_name


class EdgeloopStack(Stack):
    def __init__(self, scope: Construct, id: str, **kwargs: object) -> None:
        super().__init__(scope, id, **kwargs)  # type: ignore[arg-type]
        access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            # CloudFront standard logs are delivered with ACLs.
            object_ownership=s3.ObjectOwnership.OBJECT_WRITER,
            removal_policy=RemovalPolicy.RETAIN,
        )
        suppress(
            access_logs, "AwsSolutions-S1", "this is the access-log bucket; logging it would loop"
        )
        # Each function has its own role; this managed policy only lets it write its own logs.
        NagSuppressions.add_stack_suppressions(
            self,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM4",
                    reason="AWSLambdaBasicExecutionRole only writes the function's own logs",
                    applies_to=[
                        "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
                    ],
                )
            ],
        )
        intake = DataIntake(self, "DataIntake", access_logs=access_logs)
        signing = Signing(self, "Signing")
        hosting = ArtifactHosting(self, "ArtifactHosting", access_logs=access_logs)
        pipeline = TrainingPipeline(
            self,
            "TrainingPipeline",
            intake=intake,
            hosting=hosting,
            signing=signing,
            access_logs=access_logs,
        )
        jobs = TrainingJobs(self, "TrainingJobs", intake=intake, pipeline=pipeline)
        iot = IotWiring(
            self, "IotWiring", intake=intake, hosting=hosting, pipeline=pipeline, signing=signing
        )
        provisioning = Provisioning(
            self, "Provisioning", device_policy=iot.policy, canary_group=canary_group_name(self)
        )
        functions: dict[str, lambda_.IFunction] = {
            "Retrain": pipeline.retrain,
            "Presign": iot.presign,
            "Status": iot.status,
            "EvaluateRollouts": iot.evaluate_rollouts,
            "Rollback": pipeline.rollback,
            "TrainingDone": jobs.done,
        }
        for function in functions.values():
            hosting.forbid_root_writes(function)
        # The hook touches no bucket: it needs no guard on the repository's root.
        Monitoring(
            self,
            "Monitoring",
            dead_letters=intake.dead_letters,
            functions={**functions, "ProvisioningHook": provisioning.hook},
        )
        # Every name the command line (`--stack`) and `edgeloop device config` read;
        # tests/infrastructure checks this against what edgeloop.cli.stack asks for.
        CfnOutput(
            self, "CdnBaseUrl", value=f"https://{hosting.distribution.distribution_domain_name}/"
        )
        # `edgeloop trust init --stack NAME` (offline) reads these two.
        CfnOutput(self, "OnlineKeyArn", value=signing.key.key_arn)
        CfnOutput(self, "ArtifactBucket", value=hosting.bucket.bucket_name)
        CfnOutput(self, "DevicePolicyName", value=iot.policy.ref)
        CfnOutput(self, "CanaryGroup", value=canary_group_name(self))
        CfnOutput(self, "StatusRule", value=iot.rule_names.status)
        CfnOutput(self, "UploadRequestRule", value=iot.rule_names.upload_requests)
        CfnOutput(self, "FleetTable", value=pipeline.fleet_table.table_name)
        CfnOutput(self, "PresenceTable", value=iot.presence_table.table_name)
        CfnOutput(self, "RegistryTable", value=pipeline.registry_table.table_name)
        CfnOutput(self, "RegistryBucket", value=pipeline.registry_bucket.bucket_name)
        CfnOutput(self, "DataBucket", value=intake.bucket.bucket_name)
        CfnOutput(self, "RetrainFunction", value=pipeline.retrain.function_name)
        CfnOutput(self, "RollbackFunction", value=pipeline.rollback.function_name)
        CfnOutput(self, "TrainingJobRole", value=jobs.role.role_arn)
        # Provisioning by claim: the factory's claim certificate gets ClaimPolicyName;
        # `edgeloop fleet allow` writes AdmissionTable.
        CfnOutput(self, "ProvisioningTemplateName", value=provisioning.template_name)
        CfnOutput(self, "ClaimPolicyName", value=provisioning.claim_policy.ref)
        CfnOutput(self, "AdmissionTable", value=provisioning.admission_table.table_name)
        CfnOutput(self, "FleetGroup", value=provisioning.fleet_group_name)
