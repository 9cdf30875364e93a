"""Upload grants are SigV4 on the data bucket's regional endpoint, in every region.

botocore signs presigned POSTs with SigV2 and names the global endpoint in the
regions that still list SigV2, unless the client says otherwise; S3 refuses SigV2 on
newer buckets. No request leaves the process: a presigned POST is signed locally.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterator

import boto3
import pytest

from functions.common.clients import client
from functions.common.cold_start import reset_cold_start
from functions.presign.logic import policy_conditions, signed_post

# The first four still list SigV2, so botocore would pick it for a presigned POST.
REGIONS = ("us-east-1", "eu-west-1", "us-west-2", "ap-southeast-2", "eu-central-1", "sa-east-1")
SECRET = "grant-signing-test-secret"
BUCKET = "edgeloop-data-0a1b2c"
KEY = "data/digits/pump-7/01J0000000000000000000000.npz"


@pytest.fixture
def lambda_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A function's environment on AWS: its region, its role's keys, no endpoint override."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAGRANTSIGNINGTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token")
    # boto3's default session keeps the credentials it first found; a new container's
    # would read these.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    reset_cold_start()
    yield monkeypatch
    reset_cold_start()


def _sigv4_signature(policy: str, date: str, region: str) -> str:
    """The SigV4 signature of a POST policy, derived as S3 checks it."""
    key = ("AWS4" + SECRET).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, policy.encode(), hashlib.sha256).hexdigest()


def _grant(region: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    monkeypatch.setenv("AWS_REGION", region)
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    reset_cold_start()
    return signed_post(client("s3"), BUCKET, KEY, "application/x-npz", 4096, 300)


@pytest.mark.parametrize("region", REGIONS)
def test_upload_grants_are_sigv4_on_the_buckets_regional_endpoint(
    region: str, lambda_in: pytest.MonkeyPatch
) -> None:
    post = _grant(region, lambda_in)
    fields = post["fields"]
    assert isinstance(fields, dict)
    assert post["url"] == f"https://{BUCKET}.s3.{region}.amazonaws.com/"
    assert not {"AWSAccessKeyId", "signature"} & set(fields), "a SigV2 grant"
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    access_key, date, scope_region, service, terminator = fields["x-amz-credential"].split("/")
    assert (access_key, scope_region, service, terminator) == (
        "ASIAGRANTSIGNINGTEST",
        region,
        "s3",
        "aws4_request",
    )
    assert re.fullmatch(r"\d{8}T\d{6}Z", fields["x-amz-date"])
    assert fields["x-amz-security-token"] == "session-token"
    assert fields["x-amz-signature"] == _sigv4_signature(fields["policy"], date, region)
    # The policy signs the SigV4 fields and the one key, size and type the grant allows.
    conditions = policy_conditions(fields)
    for name in ("x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-security-token"):
        assert {name: fields[name]} in conditions
    assert {"bucket": BUCKET} in conditions
    assert {"key": KEY} in conditions
    assert ["content-length-range", 1, 4096] in conditions
    assert base64.b64decode(fields["policy"])


def test_the_local_clouds_endpoint_still_takes_the_grants_by_path(
    lambda_in: pytest.MonkeyPatch,
) -> None:
    """moto's server on an IP address has no per-bucket host names: path addressing."""
    lambda_in.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    post = _grant("us-east-1", lambda_in)
    fields = post["fields"]
    assert isinstance(fields, dict)
    assert post["url"] == f"http://127.0.0.1:4566/{BUCKET}"
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    assert "AWSAccessKeyId" not in fields
