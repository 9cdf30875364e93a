"""Artifact hosting: the fleet's TUF repository (`models/tuf/`) in a private bucket, of which
CloudFront reads that prefix only. Versioned metadata and hash-prefixed targets carry a
year-long Cache-Control; timestamp.json carries no-cache, so CloudFront asks the bucket
again each time (after its policy's one-second minimum) and a nudged device sees the new
pointer."""

from __future__ import annotations

from aws_cdk import Annotations, Aws, Duration
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from edgeloop.contract.trust_targets import REPOSITORY_PREFIX
from edgeloop.trust import ROOT_METADATA_KEYS
from infra.constructs.nag import suppress
from infra.constructs.storage import allow_listing, allow_objects, private_bucket

# What the CDN serves and the signing functions write: the fleet's TUF repository.
REPOSITORY = f"{REPOSITORY_PREFIX}tuf/"
# The keys of root metadata, which only people with root keys write (offline).
ROOT_METADATA = tuple(REPOSITORY_PREFIX + key for key in ROOT_METADATA_KEYS)


class ArtifactHosting(Construct):
    def __init__(self, scope: Construct, id: str, *, access_logs: s3.IBucket) -> None:
        super().__init__(scope, id)
        self.bucket = private_bucket(
            self,
            "ArtifactBucket",
            access_logs=access_logs,
            log_prefix="artifact-bucket/",
            # Metadata versions and targets are immutable by key already; bucket
            # versioning also keeps an overwritten timestamp.json recoverable.
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-old-pointers", noncurrent_version_expiration=Duration.days(30)
                )
            ],
        )
        self.distribution = cloudfront.Distribution(
            self,
            "Cdn",
            comment="edgeloop model artifacts",
            default_behavior=cloudfront.BehaviorOptions(
                # The bucket as an import: CloudFront's own grant would cover every key
                # (`arnForObjects("*")`), so the policy statement is ours, below.
                origin=origins.S3BucketOrigin.with_origin_access_control(
                    s3.Bucket.from_bucket_attributes(
                        self,
                        "ArtifactOrigin",
                        bucket_arn=self.bucket.bucket_arn,
                        bucket_regional_domain_name=self.bucket.bucket_regional_domain_name,
                    ),
                    origin_access_levels=[cloudfront.AccessLevel.READ],
                ),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
            ),
            enable_logging=True,
            log_bucket=access_logs,
            log_file_prefix="cdn/",
        )
        Annotations.of(self.distribution).acknowledge_warning(
            "@aws-cdk/aws-cloudfront-origins:updateImportedBucketPolicyOac",
            "the artifact bucket's policy lets this distribution read models/tuf/* only; "
            "written in ArtifactHosting, not by the origin",
        )
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudfront.amazonaws.com")],
                actions=["s3:GetObject"],
                resources=[self.bucket.arn_for_objects(f"{REPOSITORY}*")],
                conditions={
                    "StringEquals": {
                        "AWS:SourceArn": f"arn:{Aws.PARTITION}:cloudfront::{Aws.ACCOUNT_ID}:"
                        f"distribution/{self.distribution.distribution_id}"
                    }
                },
            )
        )
        suppress(
            self.distribution,
            "AwsSolutions-CFR1",
            "devices anywhere may fetch models; every file is checked against TUF metadata "
            "signed by the online key under an offline root",
        )
        suppress(
            self.distribution,
            "AwsSolutions-CFR2",
            "the CDN serves immutable, signed, hash-checked files with no compute behind it; "
            "a WAF can be attached per deployment",
        )
        suppress(
            self.distribution,
            "AwsSolutions-CFR4",
            "the default *.cloudfront.net certificate allows TLSv1 by AWS's design; "
            "TLS 1.2 is enforced once a custom domain and certificate are attached",
        )
        suppress(
            self.distribution,
            "AwsSolutions-CFR7",
            "origin access control is used (the successor of OAI that this rule predates)",
        )

    def may_write_repository(self, function: lambda_.IFunction) -> None:
        """Read and create the TUF repository's online metadata and targets: exactly the
        S3 calls `edgeloop.trust.S3Store` makes (GetObject, PutObject, ListObjectsV2)."""
        allow_objects(function, self.bucket, REPOSITORY, "GetObject", "PutObject")
        allow_listing(function, self.bucket)

    def may_withdraw_targets(self, function: lambda_.IFunction) -> None:
        """Delete an aborted version's target files, so the CDN's origin no longer has
        them (`TrustRepository.withdraw`); metadata is never deleted."""
        allow_objects(function, self.bucket, f"{REPOSITORY}targets/", "DeleteObject")

    def forbid_root_writes(self, function: lambda_.IFunction) -> None:
        """Root metadata is written by people holding root keys, never by a function: an
        explicit Deny, so no later Allow on the bucket can grant it by accident."""
        function.add_to_role_policy(
            iam.PolicyStatement(
                effect=iam.Effect.DENY,
                actions=["s3:PutObject*", "s3:DeleteObject*", "s3:RestoreObject"],
                resources=[self.bucket.arn_for_objects(key) for key in ROOT_METADATA],
            )
        )
