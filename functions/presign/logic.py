"""Presigned upload URLs, scoped so a device can write only its own new object."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from edgeloop.contract import (
    UploadGrant,
    UploadMessageInvalid,
    UploadRefusal,
    UploadRequest,
    format_time,
    time_ordered_id,
    utc_now,
)
from edgeloop.contract.topics import check_thing_name
from functions.common.env import PresignEnv
from functions.common.grants import GrantCounter, GrantsExhausted
from functions.common.identity import FleetIdentity, UnknownDevice
from functions.common.model_configs import UnknownModel, model_config


class PresignRefused(ValueError):
    """The request cannot be granted; `code` is machine-readable, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def upload_key(model: str, thing: str, extension: str, batch_id: str | None = None) -> str:
    """The one key a grant may write. With the agent's batch id, asking again for
    the same batch (its answer or its POST's response was lost) names the same
    key, so a retried upload overwrites itself instead of landing twice."""
    return f"data/{model}/{thing}/{batch_id or time_ordered_id()}.{extension}"


def presign(
    env: PresignEnv,
    s3: Any,
    thing: str,
    doc: Any,
    *,
    identity: FleetIdentity,
    grants: GrantCounter | None = None,
    now: datetime | None = None,
) -> UploadGrant:
    """Grant one presigned POST for `thing`, whose name comes from the topic, never the payload.

    Only under the model the registry enrols the thing for, and only while the
    thing has grants left in this window.
    """
    try:
        check_thing_name(thing)
    except ValueError as exc:
        raise PresignRefused("bad_thing", str(exc)) from exc
    try:
        request = UploadRequest.from_json(doc if isinstance(doc, dict) else b"")
    except UploadMessageInvalid as exc:
        code = "content_type" if "content_type" in str(exc) else "malformed"
        raise PresignRefused(code, str(exc)) from exc
    if request.size > env.max_upload_bytes:
        raise PresignRefused(
            "too_large",
            f"size {request.size} bytes is over the {env.max_upload_bytes}-byte cap; "
            "split the batch",
        )
    try:
        model_config(env.model_config_dir, request.model)
    except UnknownModel as exc:
        raise PresignRefused("unknown_model", str(exc.args[0])) from exc
    try:
        enrolled = identity.of(thing, request.model)
    except UnknownDevice as exc:
        raise PresignRefused("unknown_device", str(exc)) from exc
    if enrolled.model != request.model:
        raise PresignRefused(
            "wrong_model",
            f"{thing} is enrolled for model {enrolled.model!r}, not {request.model!r}; "
            "a device uploads only for its own model",
        )
    if grants is not None:
        try:
            grants.take(thing)
        except GrantsExhausted as exc:
            raise PresignRefused("rate_limited", str(exc)) from exc
    key = upload_key(request.model, thing, request.extension, request.batch_id)
    post = signed_post(
        s3, env.data_bucket, key, request.content_type, request.size, env.url_ttl_seconds
    )
    expires = (now or utc_now()) + timedelta(seconds=env.url_ttl_seconds)
    return UploadGrant(
        request_id=request.request_id,
        url=post["url"],
        fields=post["fields"],
        key=key,
        max_bytes=request.size,
        expires_at=format_time(expires),
    )


def signed_post(
    s3: Any, bucket: str, key: str, content_type: str, size: int, expires_in: int
) -> dict[str, Any]:
    """The presigned POST for one upload: its URL and the form fields a device sends.

    SigV4 on the regional endpoint comes from the client (functions.common.clients).
    """
    post: dict[str, Any] = s3.generate_presigned_post(
        Bucket=bucket,
        Key=key,
        Fields={"Content-Type": content_type},
        # boto3 adds {"bucket"} and an exact {"key"} condition (not starts-with),
        # so the URL writes this one new object and nothing else.
        Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, size]],
        ExpiresIn=expires_in,
    )
    return post


def refusal(doc: Any, error: PresignRefused) -> UploadRefusal:
    request_id = doc.get("request_id") if isinstance(doc, dict) else None
    return UploadRefusal(
        request_id if isinstance(request_id, str) else None, error.code, str(error)
    )


def policy_conditions(fields: dict[str, str]) -> list[Any]:
    """Decode the signed POST policy's conditions (for checks and tests)."""
    import base64

    policy = json.loads(base64.b64decode(fields["policy"]))
    conditions: list[Any] = policy["conditions"]
    return conditions
