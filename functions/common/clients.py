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


# Upload grants must be SigV4 on the bucket's regional endpoint: in regions that still
# list SigV2 (us-east-1, eu-west-1, us-west-2, ap-southeast-2...) botocore would sign a
# presigned POST the legacy way, against the global endpoint, and S3 refuses SigV2.
_S3_CONFIG = _CONFIG.merge(
    Config(
        signature_version="s3v4",
        s3={"addressing_style": "virtual", "us_east_1_regional_endpoint": "regional"},
    )
)


@cold_start
def client(service: str) -> Any:
    return boto3.client(service, config=_S3_CONFIG if service == "s3" else _CONFIG)


@cold_start
def iot_data_client() -> Any:
    """The IoT data plane needs the account's own ATS endpoint in AWS."""
    endpoint = os.environ.get("IOT_DATA_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        address = client("iot").describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
        endpoint = f"https://{address}"
    return boto3.client("iot-data", endpoint_url=endpoint, config=_CONFIG)
