"""Per device-update line items: CDN requests as the observed device made them, and the
S3 GETs CloudFront makes for the ones it may not cache."""

from __future__ import annotations

from typing import Any

import pytest

from bench.fleet.costs import Sizes, per_update
from bench.fleet.observed import origin_gets
from bench.fleet.prices import usd

ROOT_PROBE = "models/tuf/metadata/2.root.json"
TIMESTAMP = "models/tuf/metadata/timestamp.json"
PATCH = "models/tuf/targets/vibration/2/ab.from-1.zstd"

# One outcome report that counted (a read and the transaction), no schedule run.
UNITS: dict[str, Any] = {
    "per_report": {"counted": {"dynamodb GetItem (fleet)": 1.0}},
    "per_schedule_run": {},
    "start": {},
    "item_bytes": {"fleet": 400, "registry:tally": 100, "fleet:index": 130},
    "report_ms": 10.0,
    "tick_ms": 0.0,
}


def test_only_the_no_cache_timestamp_goes_to_the_origin_every_time() -> None:
    assert origin_gets([ROOT_PROBE, TIMESTAMP]) == 1
    assert origin_gets([ROOT_PROBE, PATCH]) == 0
    assert origin_gets([TIMESTAMP, TIMESTAMP]) == 2


@pytest.mark.parametrize(("cdn", "origin"), [(1.0, 1.0), (2.0, 1.0), (2.0, 0.0)])
def test_cdn_requests_and_origin_gets_are_billed_as_measured(cdn: float, origin: float) -> None:
    sizes = Sizes(
        status_messages=1,
        nudge_messages=1.0,
        cdn_requests=cdn,
        download_bytes=400,
        origin_gets=origin,
    )
    figures = per_update(1, {"counted": 1}, 0, 1, UNITS, sizes)
    lines = figures["usd_per_million_updates"]
    p = usd()
    assert figures["cdn_requests"] == cdn
    assert figures["cdn_origin_gets"] == origin
    assert lines["CloudFront requests"] == pytest.approx(cdn * p["cloudfront_https_request"] * 1e6)
    assert lines["S3 GETs from CloudFront (no-cache timestamp)"] == pytest.approx(
        origin * p["s3_get"] * 1e6
    )
    assert figures["usd_per_million_updates_total"] == pytest.approx(sum(lines.values()), abs=1e-3)


def test_a_run_kept_from_before_has_no_origin_gets() -> None:
    kept: dict[str, Any] = {
        "status_messages": 1,
        "nudge_messages": 1.0,
        "cdn_requests": 2.0,
        "download_bytes": 56,
    }
    assert Sizes(**kept).origin_gets == 0.0
