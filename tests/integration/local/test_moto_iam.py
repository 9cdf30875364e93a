"""The local AWS with IAM on: presigned requests are authorized as their signer, SigV4 only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from edgeloop.local.aws import REGION, MotoServer
from edgeloop.local.moto_iam import Credentials, create_principal, enable_authorization, for_moto

BUCKET = "grants-bucket"


@pytest.fixture(scope="module")
def local_aws() -> Iterator[tuple[MotoServer, Credentials]]:
    from edgeloop.local.moto_iam import operator

    aws = MotoServer(iam=True)
    admin = operator(aws.endpoint, REGION)
    aws.credentials = admin.as_kwargs()
    signer = create_principal(
        aws.client("iam"),
        "signer",
        [
            {
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{BUCKET}/data/*",
            }
        ],
    )
    enable_authorization(aws.endpoint)
    aws.client("s3").create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    yield aws, signer
    aws.stop()


def s3_as(aws: MotoServer, who: Credentials, signature: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=aws.endpoint,
        region_name=REGION,
        config=Config(signature_version=signature),
        **who.as_kwargs(),
    )


def post(grant: dict[str, Any]) -> int:
    return requests.post(
        grant["url"], data=grant["fields"], files={"file": b"batch"}, timeout=30
    ).status_code


def test_a_sigv4_presigned_post_inside_the_signers_policy_is_accepted(
    local_aws: tuple[MotoServer, Credentials],
) -> None:
    aws, signer = local_aws
    grant = s3_as(aws, signer, "s3v4").generate_presigned_post(BUCKET, "data/a.npz")
    assert post(grant) == 204


def test_a_presigned_post_outside_the_signers_policy_is_refused(
    local_aws: tuple[MotoServer, Credentials],
) -> None:
    aws, signer = local_aws
    grant = s3_as(aws, signer, "s3v4").generate_presigned_post(BUCKET, "models/a.npz")
    assert post(grant) == 403


def test_a_sigv2_presigned_post_is_refused_as_s3_refuses_it(
    local_aws: tuple[MotoServer, Credentials],
) -> None:
    aws, signer = local_aws
    grant = s3_as(aws, signer, "s3").generate_presigned_post(BUCKET, "data/b.npz")
    assert "AWSAccessKeyId" in grant["fields"]
    assert post(grant) == 403


def test_a_presigned_put_is_authorized_as_its_signer(
    local_aws: tuple[MotoServer, Credentials],
) -> None:
    aws, signer = local_aws
    s3 = s3_as(aws, signer, "s3v4")
    inside = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "data/c"})
    outside = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "x/c"})
    assert requests.put(inside, data=b"1", timeout=30).status_code == 200
    assert requests.put(outside, data=b"1", timeout=30).status_code == 403


def test_an_unknown_key_is_refused(local_aws: tuple[MotoServer, Credentials]) -> None:
    aws, _ = local_aws
    stranger = Credentials("AKIASTRANGER0000000", "secret")
    with pytest.raises(ClientError, match=r"InvalidAccessKeyId"):
        s3_as(aws, stranger, "s3v4").list_objects_v2(Bucket=BUCKET)


def test_statements_moto_cannot_scope_keep_their_actions_and_lose_their_resources() -> None:
    statements: list[dict[str, Any]] = [
        {
            "Effect": "Allow",
            "Action": ["dynamodb:GetItem", "s3:GetObject"],
            "Resource": ["arn:aws:dynamodb:eu-west-1:1:table/t", "arn:aws:s3:::b/k"],
        },
        {"Effect": "Allow", "Action": "iot:RetainPublish", "Resource": "arn:aws:iot:x:1:topic/t"},
        {"Effect": "Deny", "Action": "kms:Sign", "Resource": "arn:aws:kms:x:1:key/k"},
    ]
    adapted = for_moto(statements)
    assert {
        "Effect": "Allow",
        "Action": ["s3:GetObject"],
        "Resource": statements[0]["Resource"],
    } in adapted
    assert {
        "Effect": "Allow",
        "Action": ["dynamodb:GetItem", "dynamodb:TransactGetItems"],
        "Resource": "*",
    } in adapted
    assert {
        "Effect": "Allow",
        "Action": ["iot:RetainPublish", "iotdata:Publish"],
        "Resource": "*",
    } in adapted
    # A Deny is never widened: it would refuse the action everywhere.
    assert {
        "Effect": "Deny",
        "Action": ["kms:Sign"],
        "Resource": statements[2]["Resource"],
    } in adapted
