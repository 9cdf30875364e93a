"""A fresh local AWS (moto's server over HTTP) per test: buckets, tables, queue, KMS key,
and the fleet's TUF repository initialised in the artifact bucket (local root keys, the
online roles on moto's KMS key), as `edgeloop trust init` leaves it.

S3 notifications go to SQS inside moto exactly as they would in AWS, and the
tests hand the received messages to the retrain handler as a Lambda SQS event.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import requests
from sklearn.datasets import load_digits

from edge.download import HttpFetcher
from edge.targets import InstalledModel, Offer
from edge.trust import SignedRepository, TrustLimits
from edge.uploads import encode_batch
from edgeloop.contract import Nudge, StagePlan, ThingTopics, announcement
from edgeloop.contract.stages import BANDS
from edgeloop.contract.trust_targets import REPOSITORY_PREFIX, RolloutPointer
from edgeloop.factory.config import RolloutSection
from edgeloop.local.aws import init_trust, provision
from edgeloop.local.cdn import BucketOrigin, LocalCdn
from edgeloop.local.router import sqs_event
from edgeloop.local.streams import StreamReader, passes, stream_event
from edgeloop.trust import KmsSigner, S3Store, TrustRepository, VersionRelease
from functions.common.clients import iot_data_client
from functions.common.cold_start import reset_cold_start
from functions.common.fleet import FleetTable
from functions.common.identity import enroll
from functions.common.registry import STAGE_COUNTER_FILTER, Registry
from functions.common.rollouts import Policy, Rollout, State
from functions.common.rules import TOPIC_THING
from functions.common.wiring import rollouts
from functions.evaluate_rollouts import handler as evaluate_rollouts
from functions.presign import handler as presign
from functions.status import handler as status
from tests.factories import digits_toml

DIGITS_TOML = digits_toml(threshold=0.9, min_improvement=0.0)

VIBRATION_TOML = """
[model]
name = "vibration"
kind = "kmeans_anomaly"
n_features = 8
[train]
params = { n_clusters = 4 }
[gate]
metric = "silhouette"
threshold = 0.5
[rollout]
stages = [1, 10, 50, 100]
healthy_to_advance = 2
abort_min_reports = 3
abort_share = 0.34
"""


@dataclass
class FakeLambdaContext:
    function_name: str = "edgeloop-test"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:edgeloop-test"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


@dataclass
class LocalCloud:
    endpoint: str
    names: dict[str, str]
    config_dir: Path
    published: list[dict[str, Any]]
    root: bytes = b""  # root v1 of the fleet's repository: what devices ship with
    cdn: LocalCdn | None = None
    # The registry's stream, read from where the fixture opened it, as the stack's
    # event source mapping reads it for the schedule function.
    stream: StreamReader | None = None

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name="eu-west-1")

    def trust(self) -> TrustRepository:
        """The fleet's repository as the functions sign it (moto's KMS key)."""
        return TrustRepository(
            S3Store(self.client("s3"), self.names["ARTIFACT_BUCKET"], REPOSITORY_PREFIX),
            KmsSigner.of_key(self.client("kms"), self.names["SIGNING_KEY_ID"]),
        )

    def pointer(self, model: str) -> RolloutPointer | None:
        return self.trust().pointer(model)

    def device(self, thing: str, tmp: Path) -> SignedRepository:
        """A device's view of the repository, through a CDN stand-in over the bucket."""
        if self.cdn is None:
            self.cdn = LocalCdn(BucketOrigin(self.client("s3"), self.names["ARTIFACT_BUCKET"]))
        http = HttpFetcher(self.cdn.base_url + REPOSITORY_PREFIX, timeout=5.0, retries=1)
        return SignedRepository(
            http, self.root, tmp / thing, limits=TrustLimits(min_refresh_seconds=0.0)
        )

    def offer(
        self, model: str, thing: str, tmp: Path, installed: InstalledModel | None = None
    ) -> tuple[Offer, SignedRepository]:
        device = self.device(thing, tmp)
        return device.refresh(model, thing, installed), device

    def post_upload(self, answer: dict[str, Any], data: bytes) -> requests.Response:
        return requests.post(answer["url"], data=answer["fields"], files={"file": data}, timeout=10)

    def put_batch(self, model: str, thing: str, name: str, data: bytes) -> str:
        key = f"data/{model}/{thing}/{name}"
        self.client("s3").put_object(Bucket=self.names["DATA_BUCKET"], Key=key, Body=data)
        return key

    def receive_event(self, expected: int) -> dict[str, Any]:
        """Drain the queue into one Lambda SQS event, as the event source mapping would."""
        sqs = self.client("sqs")
        url = self.names["QUEUE_URL"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        records: list[dict[str, Any]] = []

        def uploads() -> int:
            return sum(1 for r in records if "Records" in json.loads(r["body"]))

        for _ in range(100):
            if uploads() >= expected:
                break
            response = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]
            )
            records.extend(sqs_event(response.get("Messages", []), arn)["Records"])
        # S3 also sends a test event when the notification is configured; Lambda gets it too.
        assert uploads() == expected
        return {"Records": records}

    def announcements(self, topic: str) -> list[dict[str, Any]]:
        return [p for p in self.published if p["topic"] == topic]

    def band_offers(self, model: str) -> dict[int, tuple[str, int | None]]:
        """What the last nudge on each band of `model` names, bands never nudged left out."""
        return {
            band: _named(found[-1]["payload"])
            for band in range(BANDS)
            if (found := self.announcements(announcement(model, band)))
        }

    def thing_offers(self, things: Iterable[str]) -> dict[str, tuple[str, int | None]]:
        """What the last nudge on each of `things`' own topic names, those never nudged
        left out."""
        return {
            thing: _named(found[-1]["payload"])
            for thing in things
            if (found := self.announcements(ThingTopics(thing).nudge))
        }

    def enroll(self, thing: str, model: str, canary: bool = False) -> None:
        enroll(self.client("iot"), thing, model, self.names["CANARY_GROUP"] if canary else None)
        # As the local runtime does: the identity the fleet table kept is forgotten.
        FleetTable(self.client("dynamodb"), self.names["FLEET_TABLE"]).forget_identity(thing)

    def new_container(self) -> None:
        """The functions start cold, as in a new Lambda container, with their
        IoT publishes still captured into `published`."""
        reset_cold_start()
        iot_data_client().meta.events.register("before-send.iot-data.Publish", self._capture)

    def _capture(self, request: Any, **_: Any) -> None:
        query = dict(p.split("=", 1) for p in request.url.split("?", 1)[1].split("&"))
        self.published.append(
            {
                "topic": request.url.split("/topics/", 1)[1].split("?", 1)[0].replace("%2F", "/"),
                "retain": query.get("retain") == "true",
                "qos": int(query.get("qos", "0")),
                "payload": bytes(request.body or b""),
            }
        )


# pump-1..6: vibration, named canaries (stage 0); pump-7..9: digits; pump-10..12:
# vibration, in the stage their name's basis point puts them (pump-10: stage 3, the
# 10-50% of the default plan; pump-11 and pump-12: stage 4).
ROSTER = (
    *((f"pump-{i}", "vibration", True) for i in range(1, 7)),
    *((f"pump-{i}", "digits", False) for i in range(7, 10)),
    *((f"pump-{i}", "vibration", False) for i in range(10, 13)),
)
NAMED_CANARIES = tuple(thing for thing, model, canary in ROSTER if canary)


@pytest.fixture
def cloud(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalCloud]:
    resources = provision(
        lambda service: boto3.client(service, endpoint_url=moto_endpoint, region_name="eu-west-1"),
        prefix=f"test-{uuid.uuid4().hex[:6]}",
    )
    names = {**resources.function_env(), "QUEUE_URL": resources.queue_url}
    config_dir = tmp_path / "models"
    config_dir.mkdir()
    (config_dir / "digits.toml").write_text(DIGITS_TOML)
    (config_dir / "vibration.toml").write_text(VIBRATION_TOML)
    env = {
        **{k: v for k, v in names.items() if k != "QUEUE_URL"},
        "MODEL_CONFIG_DIR": str(config_dir),
        "AWS_ENDPOINT_URL": moto_endpoint,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "edgeloop",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cloud = LocalCloud(moto_endpoint, names, config_dir, [])
    cloud.stream = StreamReader(cloud.client("dynamodbstreams"), resources.registry_stream_arn)
    cloud.root = init_trust(cloud.client, resources, tmp_path / "root-keys")
    # The fleet the cloud tests speak for, as the thing registry knows it.
    for thing, model, canary in ROSTER:
        cloud.enroll(thing, model, canary)
    cloud.new_container()
    yield cloud
    reset_cold_start()
    if cloud.cdn is not None:
        cloud.cdn.stop()


def npz_bytes(X: np.ndarray, y: np.ndarray | None = None) -> bytes:
    return encode_batch(X, y)


def digit_batches(count: int, start: int, rows: int) -> list[bytes]:
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    out = []
    for i in range(count):
        idx = order[start + i * rows : start + (i + 1) * rows]
        out.append(npz_bytes(X[idx], y[idx]))
    return out


def upload_round(cloud: LocalCloud, batches: list[bytes], round_no: int) -> dict[str, Any]:
    for i, data in enumerate(batches):
        cloud.put_batch("digits", f"pump-{i % 5}", f"{round_no:04d}{i:04d}.npz", data)
    return cloud.receive_event(len(batches))


def training_job_names(cloud: LocalCloud) -> set[str]:
    """Every training job moto recorded (its server serves the whole session: compare
    before and after)."""
    pages = cloud.client("sagemaker").get_paginator("list_training_jobs").paginate()
    return {job["TrainingJobName"] for page in pages for job in page["TrainingJobSummaries"]}


def registry_of(cloud: LocalCloud) -> Registry:
    return Registry(cloud.client("dynamodb"), cloud.names["REGISTRY_TABLE"])


def report_status(topic_thing: str, **fields: Any) -> dict[str, Any]:
    """One report through the status function, as the IoT rule hands it over.

    By default the report is the device's outcome of an update: it installed v2.
    """
    report = {
        "model": "vibration",
        "version": 2,
        "health": "healthy",
        "step": "succeeded",
        "target_version": 2,
        **fields,
    }
    result: dict[str, Any] = status.handler(
        {**report, TOPIC_THING: topic_thing}, FakeLambdaContext()
    )
    return result


def deliver_counted(cloud: LocalCloud) -> dict[str, str] | None:
    """Deliver what the registry's stream holds since the last delivery to the schedule
    function, as the stack's event source mapping does: the records its filter passes, in
    one batch. Returns what the evaluation decided, or None when the filter passed nothing
    (Lambda would not have invoked the function)."""
    assert cloud.stream is not None
    counted = [r for r in cloud.stream.read() if passes(STAGE_COUNTER_FILTER, r)]
    if not counted:
        return None
    result: dict[str, Any] = evaluate_rollouts.handler(stream_event(counted), FakeLambdaContext())
    assert "resigned" not in result  # the stream's evaluation is not the schedule's run
    decided: dict[str, str] = result["decided"]
    return decided


def report_heartbeat(topic_thing: str, **fields: Any) -> dict[str, Any]:
    """A report that is no outcome: what the agent sends on its timer and on connecting."""
    return report_status(topic_thing, **{"step": "idle", "target_version": None, **fields})


def finished_rollout(model: str, version: int) -> Rollout:
    """A rollout that reached every stage, as the registry keeps it."""
    return Rollout(
        model=model,
        version=version,
        previous=None,
        state=State.COMPLETE,
        stage=StagePlan().last,
        plan=StagePlan(),
        policy=Policy.of(RolloutSection()),
        started_at="2026-01-01T00:00:00Z",
        stage_started_at="2026-01-01T00:00:00Z",
        needed=0,
    )


def nudge(model: str, version: int | None) -> tuple[str, int | None]:
    """What a nudge names (the files it carries are the nudge tests' concern)."""
    return model, version


def _named(payload: bytes) -> tuple[str, int | None]:
    sent = Nudge.from_bytes(payload)
    return sent.model, sent.version


def publish_test_version(cloud: LocalCloud, version: int, model: str = "vibration") -> None:
    """A version in the fleet's repository (its bytes stand-ins), so a pointer may name it."""
    cloud.trust().publish(VersionRelease(model, version, b"model-v%d" % version))


def start_test_rollout(cloud: LocalCloud, version: int = 2, previous: bool = False) -> Registry:
    """Start vibration v`version`'s rollout with the functions' own state machine; with
    `previous`, after a rollout of the version before that reached everyone."""
    registry = registry_of(cloud)
    if previous:
        publish_test_version(cloud, version - 1)
        registry.put_rollout(
            "vibration", finished_rollout("vibration", version - 1).to_json(), expect_revision=None
        )
    publish_test_version(cloud, version)
    assert rollouts().start("vibration", version)
    return registry


def ask_presign(topic_thing: str, **request: object) -> dict[str, object]:
    event = {
        "request_id": "r-1",
        "model": "digits",
        "content_type": "application/x-npz",
        "size": 4096,
        **request,
        TOPIC_THING: topic_thing,
    }
    answer: dict[str, object] = presign.handler(event, FakeLambdaContext())
    return answer
