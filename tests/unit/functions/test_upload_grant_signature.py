"""Upload grants are SigV4, on the bucket's regional endpoint, in every region."""

from __future__ import annotations

import pytest

from functions.common.clients import client
from functions.common.cold_start import reset_cold_start


@pytest.mark.parametrize(
    "region", ["us-east-1", "eu-west-1", "us-west-2", "ap-southeast-2", "eu-central-1"]
)
def test_a_grant_is_signed_with_sigv4_on_the_regional_endpoint(
    region: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    reset_cold_start()
    try:
        post = client("s3").generate_presigned_post("edgeloop-data", "data/digits/pump-1/a.npz")
    finally:
        reset_cold_start()
    fields = {name.lower(): value for name, value in post["fields"].items()}
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    assert fields["x-amz-credential"].split("/")[2:4] == [region, "s3"]
    assert "x-amz-signature" in fields
    assert not {"awsaccesskeyid", "signature"} & set(fields)
    assert post["url"] == f"https://edgeloop-data.s3.{region}.amazonaws.com/"
