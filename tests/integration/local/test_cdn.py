"""The CDN stand-in: what devices download in the demo and the soak."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from edgeloop.local.cdn import BucketOrigin, LocalCdn
from tests.support_aws import LocalCloud
from tests.support_http import cdn_of_files

MODEL = "models/tuf/targets/m/1/" + "ab" * 32 + ".model.tflite"


def _cdn(cloud: LocalCloud) -> tuple[LocalCdn, str]:
    s3 = cloud.client("s3")
    bucket = cloud.names["ARTIFACT_BUCKET"]
    s3.put_object(Bucket=bucket, Key=MODEL, Body=bytes(range(256)) * 4)
    return LocalCdn(BucketOrigin(s3, bucket)), bucket


def test_serves_whole_objects_and_ranges_and_counts_bytes_per_device(cloud: LocalCloud) -> None:
    cdn, _ = _cdn(cloud)
    try:
        url = cdn.base_url + MODEL
        ua = {"User-Agent": "edgeloop-agent/dev-1"}
        whole = requests.get(url, headers=ua, timeout=5)
        assert whole.status_code == 200
        assert whole.content == bytes(range(256)) * 4
        tail = requests.get(url, headers={**ua, "Range": "bytes=1000-"}, timeout=5)
        assert tail.status_code == 206
        assert tail.headers["Content-Range"] == "bytes 1000-1023/1024"
        assert tail.content == (bytes(range(256)) * 4)[1000:]
        beyond = requests.get(url, headers={**ua, "Range": "bytes=2000-"}, timeout=5)
        assert beyond.status_code == 416
        assert cdn.log.bytes_by_device() == {
            "dev-1": {"full": 1024 + 24, "patch": 0, "metadata": 0}
        }
    finally:
        cdn.stop()


def test_refuses_paths_outside_models_and_reports_missing_objects(cloud: LocalCloud) -> None:
    cdn, _ = _cdn(cloud)
    try:
        assert requests.get(cdn.base_url + "data/x", timeout=5).status_code == 403
        assert requests.get(cdn.base_url + "models/../data/x", timeout=5).status_code == 403
        assert requests.get(cdn.base_url + "models/m/9/model.tflite", timeout=5).status_code == 404
    finally:
        cdn.stop()


def test_files_are_read_once_but_the_timestamp_always_read_through(cloud: LocalCloud) -> None:
    """Versioned metadata and hash-prefixed targets never change; timestamp.json does,
    and a device nudged right after a publish must see the new one."""
    cdn, bucket = _cdn(cloud)
    s3 = cloud.client("s3")
    timestamp, snapshot = (
        "models/tuf/metadata/timestamp.json",
        "models/tuf/metadata/3.snapshot.json",
    )
    s3.put_object(Bucket=bucket, Key=timestamp, Body=b'{"v": 1}')
    s3.put_object(Bucket=bucket, Key=snapshot, Body=b'{"s": 3}')
    try:
        for key in (MODEL, timestamp, snapshot):
            assert requests.get(cdn.base_url + key, timeout=5).status_code == 200
        s3.delete_object(Bucket=bucket, Key=MODEL)
        s3.delete_object(Bucket=bucket, Key=snapshot)
        s3.put_object(Bucket=bucket, Key=timestamp, Body=b'{"v": 2}')
        for key in (MODEL, snapshot):
            assert requests.get(cdn.base_url + key, timeout=5).status_code == 200
        assert requests.get(cdn.base_url + timestamp, timeout=5).content == b'{"v": 2}'
        # A missing object is never remembered: the next root appears once published.
        root = "models/tuf/metadata/2.root.json"
        assert requests.get(cdn.base_url + root, timeout=5).status_code == 404
        s3.put_object(Bucket=bucket, Key=root, Body=b"{}")
        assert requests.get(cdn.base_url + root, timeout=5).status_code == 200
    finally:
        cdn.stop()


def test_many_devices_asking_at_once_cost_one_read_from_the_bucket(cloud: LocalCloud) -> None:
    s3 = cloud.client("s3")
    bucket = cloud.names["ARTIFACT_BUCKET"]
    s3.put_object(Bucket=bucket, Key="models/m/2/from-1.zstd", Body=b"p" * 5000)
    reads: list[str] = []

    class CountingS3:
        def get_object(self, **kwargs: Any) -> Any:
            reads.append(kwargs["Key"])
            time.sleep(0.3)  # a slow origin, so the requests overlap
            return s3.get_object(**kwargs)

    cdn = LocalCdn(BucketOrigin(CountingS3(), bucket))
    try:
        url = cdn.base_url + "models/m/2/from-1.zstd"
        with ThreadPoolExecutor(16) as pool:
            bodies = list(pool.map(lambda _: requests.get(url, timeout=10).content, range(32)))
        assert bodies == [b"p" * 5000] * 32
        assert reads == ["models/m/2/from-1.zstd"]
    finally:
        cdn.stop()


def test_a_primed_artifact_is_served_without_reading_the_bucket(cloud: LocalCloud) -> None:
    reads: list[str] = []

    class CountingS3:
        def get_object(self, **kwargs: Any) -> Any:
            reads.append(kwargs["Key"])
            raise AssertionError("the bucket was read")

    origin = BucketOrigin(CountingS3(), cloud.names["ARTIFACT_BUCKET"])
    cdn = LocalCdn(origin)
    try:
        origin.prime("models/m/3/from-2.wdiff", b"patch")
        got = requests.get(cdn.base_url + "models/m/3/from-2.wdiff", timeout=5)
        assert got.content == b"patch"
        assert reads == []
    finally:
        cdn.stop()


def test_a_cdn_of_files_serves_them_and_nothing_else() -> None:
    cdn = cdn_of_files({"models/m/1/model.tflite": b"model"})
    try:
        got = requests.get(cdn.base_url + "models/m/1/model.tflite", timeout=5)
        assert got.content == b"model"
        assert requests.get(cdn.base_url + "models/m/2/model.tflite", timeout=5).status_code == 404
    finally:
        cdn.stop()
