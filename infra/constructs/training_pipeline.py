"""The training pipeline: the retrain function on the uploads queue, its tables and buckets,
and the operator's rollback function, the only other one that publishes versions."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from functions.common.fleet import BY_BAND_INDEX
from infra.constructs.artifact_hosting import ArtifactHosting
from infra.constructs.data_intake import RETRAIN_TIMEOUT, DataIntake
from infra.constructs.nag import suppress, suppress_scoped_wildcards
from infra.constructs.signing import Signing
from infra.constructs.storage import durable_table, private_bucket

BATCH_SIZE = 100
BATCHING_WINDOW = Duration.seconds(60)
MAX_CONCURRENCY = 2
DELTA_BASES = 3
# A rollback publishes like a promotion (deltas from DELTA_BASES bases, bsdiff4 up
# to 4 MB models) but trains nothing.
ROLLBACK_TIMEOUT = Duration.minutes(5)


REPO_ROOT = Path(__file__).resolve().parents[2]


def canary_group_name(stack: Stack) -> str:
    """The thing group whose members are every model's named canaries."""
    return f"{stack.stack_name}-canary"


def function_image(handler: str) -> lambda_.DockerImageCode:
    """The one functions image (infra/lambda/Dockerfile), with this function's handler.

    Built when deploying, not when synthesizing: `cdk synth` needs no Docker.
    """
    return lambda_.DockerImageCode.from_image_asset(
        directory=str(REPO_ROOT), file="infra/lambda/Dockerfile", cmd=[handler]
    )


def tracked_function(
    scope: Construct,
    id: str,
    *,
    handler: str,
    timeout: Duration,
    memory: int,
    environment: dict[str, str],
) -> lambda_.DockerImageFunction:
    log_group = logs.LogGroup(
        scope,
        f"{id}Logs",
        retention=logs.RetentionDays.ONE_MONTH,
        removal_policy=RemovalPolicy.DESTROY,
    )
    function = lambda_.DockerImageFunction(
        scope,
        id,
        code=function_image(handler),
        timeout=timeout,
        memory_size=memory,
        architecture=lambda_.Architecture.X86_64,
        tracing=lambda_.Tracing.ACTIVE,
        log_group=log_group,
        environment={
            "POWERTOOLS_SERVICE_NAME": "edgeloop",
            "POWERTOOLS_METRICS_NAMESPACE": "edgeloop",
            **environment,
        },
    )
    suppress_scoped_wildcards(function)
    function.add_to_role_policy(
        iam.PolicyStatement(actions=["iot:DescribeEndpoint"], resources=["*"])
    )
    return function


class TrainingPipeline(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        intake: DataIntake,
        hosting: ArtifactHosting,
        signing: Signing,
        access_logs: s3.IBucket,
    ) -> None:
        super().__init__(scope, id)
        self.registry_table = durable_table(self, "Registry", partition_key="pk", sort_key="sk")
        self.fleet_table = durable_table(
            self,
            "Fleet",
            partition_key="thing",
            # By model and 1% band, keys only (functions.common.fleet explains why).
            global_secondary_indexes=[
                dynamodb.GlobalSecondaryIndexPropsV2(
                    index_name=BY_BAND_INDEX,
                    partition_key=dynamodb.Attribute(
                        name="model_band", type=dynamodb.AttributeType.STRING
                    ),
                    sort_key=dynamodb.Attribute(name="thing", type=dynamodb.AttributeType.STRING),
                    projection_type=dynamodb.ProjectionType.KEYS_ONLY,
                )
            ],
        )
        self.idempotency_table = dynamodb.TableV2(
            self,
            "Idempotency",
            partition_key=dynamodb.Attribute(name="id", type=dynamodb.AttributeType.STRING),
            time_to_live_attribute="expiration",
            removal_policy=RemovalPolicy.DESTROY,
        )
        suppress(
            self.idempotency_table,
            "AwsSolutions-DDB3",
            "idempotency records expire within a week and are rebuilt by redelivery",
        )
        self.registry_bucket = private_bucket(
            self,
            "RegistryBucket",
            access_logs=access_logs,
            log_prefix="registry-bucket/",
            versioned=True,
        )
        release_env = {
            "ARTIFACT_BUCKET": hosting.bucket.bucket_name,
            "REGISTRY_BUCKET": self.registry_bucket.bucket_name,
            "REGISTRY_TABLE": self.registry_table.table_name,
            "SIGNING_KEY_ID": signing.key.key_arn,
            "DELTA_BASES": str(DELTA_BASES),
            # Publishing a version starts its rollout, which needs the fleet and the
            # named canaries to find its first stage with devices.
            "FLEET_TABLE": self.fleet_table.table_name,
            "CANARY_GROUP": canary_group_name(Stack.of(self)),
        }
        self.retrain = tracked_function(
            self,
            "Retrain",
            handler="functions.retrain.handler.handler",
            timeout=RETRAIN_TIMEOUT,
            memory=4096,
            environment={
                **release_env,
                "DATA_BUCKET": intake.bucket.bucket_name,
                "IDEMPOTENCY_TABLE": self.idempotency_table.table_name,
            },
        )
        self.retrain.add_event_source(
            sources.SqsEventSource(
                intake.queue,
                batch_size=BATCH_SIZE,
                max_batching_window=BATCHING_WINDOW,
                max_concurrency=MAX_CONCURRENCY,
                report_batch_item_failures=True,
            )
        )
        intake.bucket.grant_read(self.retrain, "data/*")
        intake.bucket.grant_put(self.retrain, "quarantine/*")
        intake.bucket.grant_delete(self.retrain, "data/*")
        self.retrain.add_to_role_policy(
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[intake.bucket.bucket_arn])
        )
        self.idempotency_table.grant_read_write_data(self.retrain)
        # Invoked by an operator only (`aws lambda invoke`): no event source, no data access.
        self.rollback = tracked_function(
            self,
            "Rollback",
            handler="functions.rollback.handler.handler",
            timeout=ROLLBACK_TIMEOUT,
            memory=2048,
            environment=release_env,
        )
        for publisher in (self.retrain, self.rollback):
            # The TUF repository only: what devices fetch is signed metadata and targets.
            hosting.bucket.grant_read_write(publisher, "models/tuf/*")
            self.registry_bucket.grant_read_write(publisher, "registry/*")
            self.registry_table.grant_read_write_data(publisher)
            self.fleet_table.grant_read_data(publisher)
            signing.allow_signing(publisher)
