"""Artifact hosting: the fleet's TUF repository (`models/tuf/`) in a bucket only CloudFront
can read. Versioned metadata and hash-prefixed targets carry a year-long Cache-Control;
timestamp.json carries no-cache, so CloudFront asks the bucket again each time (after
its policy's one-second minimum) and a nudged device sees the new pointer."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.constructs.nag import suppress
from infra.constructs.storage import private_bucket


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
                origin=origins.S3BucketOrigin.with_origin_access_control(self.bucket),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
            ),
            enable_logging=True,
            log_bucket=access_logs,
            log_file_prefix="cdn/",
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
