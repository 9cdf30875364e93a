"""The functions as `cdk deploy` ships them: the packaged task tree, the template's
environment and roles, moto with IAM authorization on, events in their real shapes."""

from __future__ import annotations

import json
import time
import urllib.error
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge.uploads import encode_batch, post_multipart
from edgeloop.local.aws import REGION, MotoServer, Resources, init_trust
from edgeloop.local.broker import EmbeddedBroker
from edgeloop.local.packaged import LambdaBuild, PackagedStack
from edgeloop.local.router import sqs_event
from functions.common.identity import enroll

RoleEdit = Callable[[str, list[dict[str, Any]]], list[dict[str, Any]]]


@dataclass
class Deployed:
    stack: PackagedStack
    resources: Resources
    root: bytes

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        return self.stack.functions[function](event)

    def client(self, service: str, as_function: str | None = None) -> Any:
        return self.stack.client(service, as_function)

    def grant(self, thing: str, model: str = "digits", size: int = 65536) -> dict[str, Any]:
        """An upload grant from the presign function, as the IoT rule invokes it for a
        request sent by Basic Ingest: the payload, and the thing the topic proved."""
        answer: dict[str, Any] = self.invoke(
            "presign",
            {
                "request_id": uuid.uuid4().hex[:12],
                "model": model,
                "content_type": "application/x-npz",
                "size": size,
                "topic_thing": thing,
            },
        )
        return answer

    def upload(self, thing: str, data: bytes, model: str = "digits") -> int:
        grant = self.grant(thing, model, size=len(data))
        assert "url" in grant, grant
        try:
            return post_multipart(grant["url"], grant["fields"], data, timeout=30)
        except urllib.error.HTTPError as refused:
            return refused.code

    def retrain_event(self, expected: int, timeout: float = 60.0) -> dict[str, Any]:
        """The SQS event Lambda's event source mapping would deliver: read from the
        uploads queue with the retrain function's own role, as the mapping does."""
        sqs = self.client("sqs", as_function="retrain")
        messages: list[dict[str, Any]] = []
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < expected and time.monotonic() < deadline:
            for message in sqs.receive_message(
                QueueUrl=self.resources.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                AttributeNames=["All"],
            ).get("Messages", []):
                body = json.loads(message["Body"])
                if "Records" in body and message["MessageId"] not in seen:
                    seen.add(message["MessageId"])
                    messages.append(message)
        assert len(seen) >= expected, f"{len(seen)} of {expected} notifications arrived"
        return sqs_event(messages, self.resources.queue_arn)


def deploy(
    tmp: Path,
    broker_url: str | None,
    role_edit: RoleEdit | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[Deployed]:
    """With no `broker_url`, the functions publish through the IoT data plane (moto's),
    as in AWS, so their publish statements are enforced too. `settings` add to every
    function's environment (a limit lowered, say)."""
    aws = MotoServer(iam=True)
    stack = PackagedStack(
        LambdaBuild.find(),
        aws.endpoint,
        REGION,
        f"t-{uuid.uuid4().hex[:6]}",
        tmp,
        extra_env={
            **({"EDGELOOP_MQTT_URL": broker_url} if broker_url else {}),
            **(settings or {}),
        },
        queue_visibility=5,
        role_edit=role_edit,
    )
    aws.credentials = stack.operator.as_kwargs()
    resources = stack.names()
    root = init_trust(aws.client, resources, tmp / "root-keys")
    deployed = Deployed(stack, resources, root)
    for thing, model in (("pump-1", "digits"), ("pump-2", "digits"), ("pump-3", "vibration")):
        enroll(deployed.client("iot"), thing, model)
    try:
        yield deployed
    finally:
        stack.close()
        aws.stop()


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    embedded = EmbeddedBroker()
    yield embedded.url
    embedded.close()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, broker: str) -> Iterator[Deployed]:
    yield from deploy(tmp_path_factory.mktemp("deployed"), broker)


def digits_batches(count: int, rows: int = 120) -> list[bytes]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return [
        encode_batch(X[i * rows : (i + 1) * rows], y[i * rows : (i + 1) * rows])
        for i in range(count)
    ]


def object_keys(deployed: Deployed, bucket: str, prefix: str) -> list[str]:
    listed = deployed.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for item in listed.get("Contents", [])]
