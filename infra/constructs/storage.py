"""The one way this stack makes a bucket or a table: private, encrypted, TLS-only, recoverable."""

from __future__ import annotations

from typing import Any

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct


def private_bucket(
    scope: Construct, id: str, *, access_logs: s3.IBucket, log_prefix: str, **options: Any
) -> s3.Bucket:
    return s3.Bucket(
        scope,
        id,
        encryption=s3.BucketEncryption.S3_MANAGED,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        server_access_logs_bucket=access_logs,
        server_access_logs_prefix=log_prefix,
        removal_policy=RemovalPolicy.RETAIN,
        **options,
    )


def durable_table(
    scope: Construct, id: str, *, partition_key: str, sort_key: str | None = None, **options: Any
) -> dynamodb.TableV2:
    """A table whose loss would lose state (registry, fleet): point-in-time recovery, retained."""
    return dynamodb.TableV2(
        scope,
        id,
        partition_key=dynamodb.Attribute(name=partition_key, type=dynamodb.AttributeType.STRING),
        sort_key=dynamodb.Attribute(name=sort_key, type=dynamodb.AttributeType.STRING)
        if sort_key
        else None,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        removal_policy=RemovalPolicy.RETAIN,
        **options,
    )


# Grants name the exact API calls the function's code makes. CDK's grant_* helpers add
# whole action groups (stream reads on tables without streams, s3:Delete*, s3:Abort*,
# object tagging), which no function here uses.


def allow_items(
    function: iam.IGrantable,
    table: dynamodb.ITableV2,
    *actions: str,
    indexes: bool = False,
) -> None:
    """DynamoDB item actions on `table` (and, with `indexes`, its indexes: queries).

    A transaction needs the action of each of its items (an Update needs UpdateItem)."""
    resources = [table.table_arn]
    if indexes:
        resources.append(f"{table.table_arn}/index/*")
    function.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(actions=[f"dynamodb:{a}" for a in actions], resources=resources)
    )


def allow_objects(function: iam.IGrantable, bucket: s3.IBucket, prefix: str, *actions: str) -> None:
    """S3 object actions on the keys under `prefix` of `bucket`."""
    allow_keys(function, bucket, f"{prefix}*", *actions)


def allow_keys(function: iam.IGrantable, bucket: s3.IBucket, pattern: str, *actions: str) -> None:
    """S3 object actions on the keys of `bucket` that match `pattern` (IAM's wildcards)."""
    function.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=[f"s3:{a}" for a in actions], resources=[bucket.arn_for_objects(pattern)]
        )
    )


def allow_listing(function: iam.IGrantable, bucket: s3.IBucket) -> None:
    """ListObjectsV2, and NoSuchKey instead of AccessDenied when a read finds no key
    (the code tells "missing" from "forbidden" by it)."""
    function.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn])
    )
