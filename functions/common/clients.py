"""boto3 clients, created once per cold start.

boto3 honours AWS_ENDPOINT_URL, which is how the local runtime points every
handler at moto's server without a code path of its own.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config

from functions.common.cold_start import cold_start

_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30
)


def s3_config() -> Config:
    """SigV4 on the bucket's regional endpoint, for requests and upload grants alike.

    Left to itself, botocore signs presigned POSTs with SigV2 in the regions that
    still list it (us-east-1, eu-west-1, us-west-2, ap-southeast-2, ...) and names
    the global endpoint; S3 refuses SigV2 on newer buckets, so no device upload
    would reach the data bucket there. Virtual-hosted addressing only against AWS:
    an endpoint override (AWS_ENDPOINT_URL, the local cloud's moto server on an IP
    address) has no per-bucket host names, and botocore then addresses by path.
    """
    s3: dict[str, str] = {"us_east_1_regional_endpoint": "regional"}
    if not (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")):
        s3["addressing_style"] = "virtual"
    return _CONFIG.merge(Config(signature_version="s3v4", s3=s3))


@cold_start
def client(service: str) -> Any:
    return boto3.client(service, config=s3_config() if service == "s3" else _CONFIG)


@cold_start
def iot_data_client() -> Any:
    """The IoT data plane needs the account's own ATS endpoint in AWS."""
    endpoint = os.environ.get("IOT_DATA_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        address = client("iot").describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
        endpoint = f"https://{address}"
    return boto3.client("iot-data", endpoint_url=endpoint, config=_CONFIG)
