"""Training beyond the function: the SageMaker jobs' role, the retrain function's right to
start them, and the completion function that an EventBridge rule calls when one ends.

The job runs the functions image (the same asset as every function) with the
training entry point as its command; its role reads the uploads and the run's
manifest, the champion's estimator and the reference set, and writes only under
the runs' output prefixes. The retrain function may start jobs named by edgeloop
and pass exactly that role, to SageMaker only.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from edgeloop.factory.handoff import DETAIL_TYPE, FINAL_STATES, run_prefix
from infra.constructs.data_intake import DataIntake
from infra.constructs.nag import matching, suppress
from infra.constructs.storage import allow_items, allow_keys, allow_listing, allow_objects
from infra.constructs.training_pipeline import (
    REPO_ROOT,
    ROLLBACK_TIMEOUT,
    TrainingPipeline,
    tracked_function,
)

# What SageMaker reports a job's state changes as, and the states that end one.
# functions/retrain/handoff.py names every job `el-{model}-{run_id}`.
JOB_NAME_PREFIX = "el-"
# A training run's manifest and its job's output, under the data bucket's run prefixes.
MANIFESTS = run_prefix("*", "*") + "manifest.json"
OUTPUTS = run_prefix("*", "*") + "output/"
# The champion's estimator of any model (functions.common.releases.estimator_key).
ESTIMATORS = "registry/*/versions/*/estimator.joblib"
SAGEMAKER_NAMESPACE = "/aws/sagemaker/TrainingJobs"


class TrainingJobs(Construct):
    def __init__(
        self, scope: Construct, id: str, *, intake: DataIntake, pipeline: TrainingPipeline
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        # The functions image: the same Dockerfile and context as every function's
        # image asset, so the same image (the command is not part of the asset).
        image = ecr_assets.DockerImageAsset(
            self, "Image", directory=str(REPO_ROOT), file="infra/lambda/Dockerfile"
        )
        self.role = iam.Role(
            self,
            "JobRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="edgeloop training jobs: read a run's uploads, write its output",
        )
        # The uploads a manifest names, the manifest, the reference set; S3Prefix
        # channels (the champion, the reference set) are listed first.
        allow_objects(self.role, intake.bucket, "data/", "GetObject")
        allow_objects(self.role, intake.bucket, "reference/", "GetObject")
        allow_keys(self.role, intake.bucket, MANIFESTS, "GetObject")
        allow_objects(self.role, intake.bucket, OUTPUTS, "PutObject")
        allow_listing(self.role, intake.bucket)
        # The champion's estimator only, for the warm start and the gate.
        allow_keys(self.role, pipeline.registry_bucket, ESTIMATORS, "GetObject")
        allow_listing(self.role, pipeline.registry_bucket)
        image.repository.grant_pull(self.role)
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[
                    stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name="/aws/sagemaker/TrainingJobs:*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={
                    "StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}
                },
            )
        )
        suppress(
            self.role,
            "AwsSolutions-IAM5",
            "a training job reads uploads, the run's manifest and the champion's estimator by "
            "key pattern and writes only under run output prefixes; ECR's token, logs under "
            "SageMaker's own log group and metrics in its namespace take no narrower resource",
            [
                "Resource::*",
                matching(r"^Resource::<.*\.Arn>\/(data|reference)\/\*$"),
                matching(r"^Resource::<.*\.Arn>\/training\/\*\/\*\/(manifest\.json|output\/\*)$"),
                matching(r"^Resource::<.*\.Arn>\/registry\/\*\/versions\/\*\/estimator\.joblib$"),
                matching(r"^Resource::arn:<AWS::Partition>:logs:.*TrainingJobs:\*$"),
            ],
        )

        retrain = pipeline.retrain
        retrain.add_environment("TRAINING_ROLE_ARN", self.role.role_arn)
        retrain.add_environment("TRAINING_IMAGE_URI", image.image_uri)
        allow_keys(retrain, intake.bucket, MANIFESTS, "PutObject")
        retrain.add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker:CreateTrainingJob", "sagemaker:AddTags"],
                resources=[
                    stack.format_arn(
                        service="sagemaker",
                        resource="training-job",
                        resource_name=f"{JOB_NAME_PREFIX}*",
                    )
                ],
            )
        )
        retrain.add_to_role_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[self.role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        suppress(
            retrain,
            "AwsSolutions-IAM5",
            "the retrain function starts only jobs named el-{model}-{run_id} and writes only "
            "run manifests",
            [
                matching(r"^Resource::arn:<AWS::Partition>:sagemaker:.*:training-job\/el-\*$"),
                matching(r"^Resource::<.*\.Arn>\/training\/\*\/\*\/manifest\.json$"),
            ],
        )

        # Publishes like a promotion (deltas, signing), trains nothing.
        self.done = tracked_function(
            self,
            "Done",
            handler="functions.training_done.handler.handler",
            timeout=ROLLBACK_TIMEOUT,
            memory=2048,
            environment={**pipeline.release_env, "DATA_BUCKET": intake.bucket.bucket_name},
        )
        pipeline.may_publish(self.done)
        # Claiming a run's ending is a conditional put; a failed ending gives it back.
        allow_items(self.done, pipeline.registry_table, "DeleteItem")
        allow_objects(self.done, intake.bucket, OUTPUTS, "GetObject")
        allow_listing(self.done, intake.bucket)
        suppress(
            self.done,
            "AwsSolutions-IAM5",
            "the completion function reads only training jobs' outputs",
            [matching(r"^Resource::<.*\.Arn>\/training\/\*\/\*\/output\/\*$")],
        )
        # Only jobs that ran with this stack's role: another stack's jobs in the same
        # account have their own rule.
        events.Rule(
            self,
            "StateChange",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=[DETAIL_TYPE],
                detail={
                    "TrainingJobStatus": list(FINAL_STATES),
                    "RoleArn": [self.role.role_arn],
                },
            ),
            targets=[
                targets.LambdaFunction(
                    self.done, retry_attempts=8, max_event_age=Duration.hours(24)
                )
            ],
        )
