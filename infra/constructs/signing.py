"""Signing: the KMS key that vouches for every manifest. Only retrain and rollback sign."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct


class Signing(Construct):
    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(scope, id)
        self.key = kms.Key(
            self,
            "ManifestKey",
            description="edgeloop manifest signing key (ECDSA P-256); devices pin its public key",
            key_spec=kms.KeySpec.ECC_NIST_P256,
            key_usage=kms.KeyUsage.SIGN_VERIFY,
            removal_policy=RemovalPolicy.RETAIN,
        )

    def allow_signing(self, grantee: iam.IGrantable) -> None:
        self.key.grant(grantee, "kms:Sign", "kms:GetPublicKey")
