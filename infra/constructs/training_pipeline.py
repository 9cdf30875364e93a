"""The training pipeline: the retrain function on the uploads queue, its tables and buckets,
and the operator's rollback function, the only other one that publishes versions."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from functions.common.fleet import BY_BAND_INDEX, TTL_ATTRIBUTE
from functions.common.registry import STREAM_VIEW
from infra.constructs.artifact_hosting import ArtifactHosting
from infra.constructs.data_intake import RETRAIN_TIMEOUT, DataIntake
from infra.constructs.nag import suppress, suppress_scoped_wildcards
from infra.constructs.signing import Signing
from infra.constructs.storage import (
    allow_items,
    allow_listing,
    allow_objects,
    durable_table,
    private_bucket,
)

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
        # Its stream carries each counted outcome to the schedule function (IotWiring).
        self.registry_table = durable_table(
            self,
            "Registry",
            partition_key="pk",
            sort_key="sk",
            dynamo_stream=dynamodb.StreamViewType(STREAM_VIEW),
        )
        self.fleet_table = durable_table(
            self,
            "Fleet",
            partition_key="thing",
            # The upload grant counters expire; status records carry no TTL attribute.
            time_to_live_attribute=TTL_ATTRIBUTE,
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
        self.release_env = release_env = {
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
        # Read uploads and the platform's reference sets; quarantine moves a bad upload
        # (copy, then delete) and writes why beside it.
        allow_objects(self.retrain, intake.bucket, "data/", "GetObject", "DeleteObject")
        allow_objects(self.retrain, intake.bucket, "reference/", "GetObject")
        allow_objects(self.retrain, intake.bucket, "quarantine/", "PutObject")
        allow_listing(self.retrain, intake.bucket)
        # Powertools idempotency's persistence layer.
        allow_items(
            self.retrain, self.idempotency_table, "GetItem", "PutItem", "UpdateItem", "DeleteItem"
        )
        # Pending uploads are cleared once a run consumed them.
        allow_items(self.retrain, self.registry_table, "DeleteItem")
        # Invoked by an operator only (`aws lambda invoke`): no event source, no data access.
        self.rollback = tracked_function(
            self,
            "Rollback",
            handler="functions.rollback.handler.handler",
            timeout=ROLLBACK_TIMEOUT,
            memory=2048,
            environment=release_env,
        )
        self._hosting, self._signing = hosting, signing
        # Every function that publishes versions and starts their rollout (IotWiring
        # lets each read identities and announce).
        self.publishers: list[lambda_.IFunction] = []
        for publisher in (self.retrain, self.rollback):
            self.may_publish(publisher)

    def may_publish(self, publisher: lambda_.IFunction) -> None:
        """What a function that publishes versions and starts their rollout may do."""
        self.publishers.append(publisher)
        # The TUF repository only: what devices fetch is signed metadata and targets.
        self._hosting.may_write_repository(publisher)
        # The cloud's own copies of each version: patch bases, manifests, estimators.
        allow_objects(publisher, self.registry_bucket, "registry/", "GetObject", "PutObject")
        allow_listing(publisher, self.registry_bucket)
        # Versions, runs, the champion, uploads (retrain), and starting the rollout.
        allow_items(publisher, self.registry_table, "GetItem", "PutItem", "Query")
        # Starting a rollout asks which of its stages have devices.
        allow_items(publisher, self.fleet_table, "GetItem", "Query", indexes=True)
        self._signing.allow_signing(publisher)
