"""us-east-1 list prices, with their sources, and the constants the bill is made of."""

from __future__ import annotations

from typing import Any

from edge.config import BrokerSection

# us-east-1 list prices. "source" names the page read; "confirmed" says what a stored
# copy of it showed (searched again for this version of the benchmark).
PRICES: dict[str, dict[str, Any]] = {
    "iot_message": {
        "usd": 1.00 / 1e6,
        "unit": "message (5 KB increments), first 1B/month",
        "source": "https://aws.amazon.com/iot-core/pricing/ (metering rules: "
        "https://aws.amazon.com/iot-core/pricing/additional-details/)",
        "confirmed": "not for us-east-1: the stored copies of the pricing page end before "
        "its price table. The same $1.00 per million messages appears in the page's worked "
        "example (Europe, Ireland) as quoted by "
        "https://gist.github.com/brianfoody/2c62cecc912dbd97bc759eba427e84cf and by a "
        "transcription of the page read 2026-09-20 "
        "(https://raw.githubusercontent.com/api-evangelist/amazon-iot-core/refs/heads/main/"
        "plans/amazon-iot-core-plans-pricing.yml). Metering (5 KB units; a retained "
        "publish metered as publish and retained) confirmed from the additional-details page",
    },
    "iot_rule_triggered": {
        "usd": 0.15 / 1e6,
        "unit": "rule triggered",
        "source": "https://aws.amazon.com/iot-core/pricing/",
        "confirmed": "no: no stored copy or transcription shows the rules engine rate",
    },
    "iot_rule_action": {
        "usd": 0.15 / 1e6,
        "unit": "action executed",
        "source": "https://aws.amazon.com/iot-core/pricing/",
        "confirmed": "no (see iot_rule_triggered)",
    },
    "iot_registry_operation": {
        "usd": 1.25 / 1e6,
        "unit": "registry operation (DescribeThing, ListThingGroupsForThing and "
        "ListThingsInThingGroup are listed as such)",
        "source": "https://www.amazonaws.cn/en/iot-core/pricing/additional-details/ "
        "(which APIs count); rate from https://aws.amazon.com/iot-core/pricing/",
        "confirmed": "not for us-east-1: $1.25 per million registry or Device Shadow "
        "operations is the page's Canada (Central) figure in the 2026-09-20 transcription "
        "named under iot_message; which APIs count is confirmed",
    },
    "iot_connectivity_minute": {
        "usd": 0.08 / 1e6,
        "unit": "minute of connection (metered in one-minute increments)",
        "source": "https://aws.amazon.com/iot-core/pricing/",
        "confirmed": "not for us-east-1: $0.08 per 1,000,000 minutes of connection is the "
        "page's worked example (Europe, Ireland) in the 2026-09-20 transcription named under "
        "iot_message, and the rate the AWS IoT Greengrass pricing page (US East) quotes for "
        "IoT Core connections, transcribed 2026-10-07 (https://raw.githubusercontent.com/"
        "api-evangelist/amazon-iot-greengrass/refs/heads/main/plans/"
        "amazon-iot-greengrass-plans-pricing.yml). MQTT PINGREQ/PINGRESP are not metered "
        "(https://aws.amazon.com/iot-core/pricing/additional-details/, searched 2026-12-06)",
    },
    "lambda_request": {
        "usd": 0.20 / 1e6,
        "unit": "request",
        "source": "https://docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html",
        "confirmed": "yes (undated whitepaper page)",
    },
    "lambda_gb_second": {
        "usd": 0.0000166667,
        "unit": "GB-second (x86)",
        "source": "https://aws.amazon.com/lambda/pricing/",
        "confirmed": "as lambda_request",
    },
    "dynamodb_wru": {
        "usd": 0.625 / 1e6,
        "unit": "on-demand write request unit",
        "source": "https://aws.amazon.com/dynamodb/pricing/on-demand/ (rate as quoted by "
        "https://airbyte.com/data-engineering-resources/dynamodb-pricing)",
        "confirmed": "third-party quote, after the 2024-11-01 on-demand price cut",
    },
    "dynamodb_rru": {
        "usd": 0.125 / 1e6,
        "unit": "on-demand read request unit",
        "source": "as dynamodb_wru",
        "confirmed": "as dynamodb_wru",
    },
    "s3_get": {
        "usd": 0.0004 / 1e3,
        "unit": "S3 Standard GET",
        "source": "https://aws.amazon.com/s3/pricing/ (as quoted by "
        "https://c3x.dev/blog/s3-request-fees-explained)",
        "confirmed": "third-party quote",
    },
    "s3_put": {
        "usd": 0.005 / 1e3,
        "unit": "S3 Standard PUT, COPY, POST or LIST",
        "source": "https://aws.amazon.com/s3/pricing/ (as quoted by "
        "https://c3x.dev/blog/s3-request-fees-explained)",
        "confirmed": "third-party quote",
    },
    "kms_request": {
        "usd": 0.15 / 1e4,
        "unit": "KMS request (Sign) with an asymmetric ECC key",
        "source": "https://aws.amazon.com/kms/pricing/",
        "confirmed": "the stored copy of the pricing page shows no request rates; third-party "
        "pages read 2026-11-22 disagree: $0.03 per 10,000 for every key type "
        "(https://www.wring.co/blog/aws-kms-pricing-guide) or asymmetric operations at 5x "
        "that (https://www.factualminds.com/blog/aws-kms-pricing-keys-requests-multi-region/). "
        "The higher is taken",
    },
    "cloudfront_https_request": {
        "usd": 0.0100 / 1e4,
        "unit": "HTTPS request, United States (per 10,000: $0.0100)",
        "source": "https://aws.amazon.com/cloudfront/pricing/",
        "confirmed": "not from AWS: the stored copy of the pricing page shows the free tier "
        "(10,000,000 requests a month, not counted here) and the transfer table, not the "
        "request rates; $0.0100 per 10,000 HTTPS requests (HTTP $0.0075) is quoted by "
        "https://kindatechnical.com/aws-certification-associate-developer/"
        "lesson-87-cloudfront-pricing.html",
    },
    "cloudfront_transfer_gb": {
        "usd": 0.085,
        "unit": "GB out, United States, Mexico and Canada, first 10 TB/month",
        "source": "http://aws.amazon.com/cloudfront/pricing",
        "confirmed": "yes, from the stored copy of the pricing page (undated)",
    },
}

GOAL_MESSAGES = 3.0
GOAL_USD_PER_MILLION = 5.0
# The at-rest goal: presence, health, identity and the schedule, per million
# device-days, connectivity aside (it is paid for being connected at all).
GOAL_AT_REST_USD_PER_MILLION = 3.0
# The agent sends its status reports through Basic Ingest unless told not to: the
# rules engine's charges, no messaging charge.
STATUS_OVER_BASIC_INGEST: bool = BrokerSection.basic_ingest
IOT_MESSAGE_BYTES = 5 * 1024
LAMBDA_MEMORY_GB = 0.5  # the status and schedule functions (infra/constructs/iot_wiring.py)
# A request's round trip from a function to the service, for the billed duration
# (assumed, not measured: moto on a shared machine answers at its own pace). DynamoDB
# promises single-digit milliseconds; the others are typical figures in one region.
SERVICE_MS: dict[str, float] = {
    "dynamodb": 5.0,
    "iot": 10.0,
    "iot-data": 10.0,
    "s3": 20.0,
    "kms": 15.0,
}


def usd() -> dict[str, float]:
    """Each price in dollars per unit, by name."""
    return {k: float(v["usd"]) for k, v in PRICES.items()}
