"""Signing: the online key of the fleet's TUF repository, in KMS.

It signs targets, snapshot and timestamp, never root: root is offline, two of
three key files held by people (`edgeloop trust init`), and no function can
read a root key because the cloud holds none. The functions that write the
repository may sign, and no device reaches any of them: retrain and rollback
publish versions, the schedule moves rollout pointers and re-signs the
timestamp. The status function, which devices reach, only counts.
"""

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
            "OnlineKey",
            description="edgeloop online trust key (ECDSA P-256): signs the TUF targets, "
            "snapshot and timestamp roles; root, offline, names it",
            key_spec=kms.KeySpec.ECC_NIST_P256,
            key_usage=kms.KeyUsage.SIGN_VERIFY,
            removal_policy=RemovalPolicy.RETAIN,
        )

    def allow_signing(self, grantee: iam.IGrantable) -> None:
        self.key.grant(grantee, "kms:Sign", "kms:GetPublicKey")
