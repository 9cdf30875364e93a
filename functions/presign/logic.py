"""Presigned upload URLs, scoped so a device can write only its own new object."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from edgeloop.contract.topics import check_thing_name
from functions.common.env import PresignEnv
from functions.common.ids import time_ordered_id
from functions.common.model_configs import UnknownModel, model_config

CONTENT_TYPES = {"text/csv": "csv", "application/x-npz": "npz"}


class PresignRefused(ValueError):
    """The request cannot be granted; `code` is machine-readable, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# A batch id as the agent names its queued batches: 20 digits of epoch
# microseconds, a dash, 8 hex digits (the same shape as time_ordered_id).
BATCH_ID = re.compile(r"[0-9]{20}-[0-9a-f]{8}")


@dataclass(frozen=True)
class UploadRequest:
    request_id: str
    model: str
    content_type: str
    size: int
    batch_id: str | None = None

    @staticmethod
    def from_json(doc: Any, max_bytes: int) -> UploadRequest:
        if not isinstance(doc, dict):
            raise PresignRefused("malformed", "the upload request must be a JSON object")
        request_id = doc.get("request_id", "")
        if not isinstance(request_id, str) or not 1 <= len(request_id) <= 64:
            raise PresignRefused("malformed", "request_id must be a string of 1-64 characters")
        model = doc.get("model")
        if not isinstance(model, str):
            raise PresignRefused("malformed", "model must be a string")
        content_type = doc.get("content_type")
        if content_type not in CONTENT_TYPES:
            raise PresignRefused(
                "content_type",
                f"content_type {content_type!r} is not one of {', '.join(CONTENT_TYPES)}",
            )
        size = doc.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise PresignRefused("malformed", "size must be a positive integer (bytes)")
        if size > max_bytes:
            raise PresignRefused(
                "too_large",
                f"size {size} bytes is over the {max_bytes}-byte cap; split the batch",
            )
        batch_id = doc.get("batch_id")
        if batch_id is not None and (
            not isinstance(batch_id, str) or not BATCH_ID.fullmatch(batch_id)
        ):
            raise PresignRefused(
                "malformed",
                "batch_id must be 20 digits of epoch microseconds, '-', 8 hex digits",
            )
        return UploadRequest(request_id, model, content_type, size, batch_id)


def upload_key(model: str, thing: str, extension: str, batch_id: str | None = None) -> str:
    """The one key a grant may write. With the agent's batch id, asking again for
    the same batch (its answer or its POST's response was lost) names the same
    key, so a retried upload overwrites itself instead of landing twice."""
    return f"data/{model}/{thing}/{batch_id or time_ordered_id()}.{extension}"


def presign(
    env: PresignEnv, s3: Any, thing: str, doc: Any, now: datetime | None = None
) -> dict[str, Any]:
    """Grant one presigned POST for `thing`, whose name comes from the topic, never the payload."""
    try:
        check_thing_name(thing)
    except ValueError as exc:
        raise PresignRefused("bad_thing", str(exc)) from exc
    request = UploadRequest.from_json(doc, env.max_upload_bytes)
    try:
        model_config(env.model_config_dir, request.model)
    except UnknownModel as exc:
        raise PresignRefused("unknown_model", str(exc.args[0])) from exc
    key = upload_key(request.model, thing, CONTENT_TYPES[request.content_type], request.batch_id)
    post = s3.generate_presigned_post(
        Bucket=env.data_bucket,
        Key=key,
        Fields={"Content-Type": request.content_type},
        # boto3 adds {"bucket"} and an exact {"key"} condition (not starts-with),
        # so the URL writes this one new object and nothing else.
        Conditions=[
            {"Content-Type": request.content_type},
            ["content-length-range", 1, request.size],
        ],
        ExpiresIn=env.url_ttl_seconds,
    )
    expires = (now or datetime.now(UTC)) + timedelta(seconds=env.url_ttl_seconds)
    return {
        "request_id": request.request_id,
        "url": post["url"],
        "fields": post["fields"],
        "key": key,
        "max_bytes": request.size,
        "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def refusal(doc: Any, error: PresignRefused) -> dict[str, Any]:
    request_id = doc.get("request_id") if isinstance(doc, dict) else None
    return {
        "request_id": request_id if isinstance(request_id, str) else None,
        "error": {"code": error.code, "message": str(error)},
    }


def policy_conditions(fields: dict[str, str]) -> list[Any]:
    """Decode the signed POST policy's conditions (for checks and tests)."""
    import base64

    policy = json.loads(base64.b64decode(fields["policy"]))
    conditions: list[Any] = policy["conditions"]
    return conditions
