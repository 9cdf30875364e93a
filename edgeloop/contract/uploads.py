"""Uploads: a device asks for a presigned POST over MQTT; the cloud grants or refuses.

    device → edgeloop/things/{thing}/upload/request    UploadRequest
    cloud  → edgeloop/things/{thing}/upload/response   UploadGrant | UploadRefusal

The device names every queued batch with a batch id, and asks with it on every
attempt, so a retry after a lost answer or a lost POST response names the same
object and cannot upload the batch twice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from edgeloop.contract.encoding import canonical_json, time_ordered_id
from edgeloop.contract.reader import Fields

CONTENT_TYPES = {"text/csv": "csv", "application/x-npz": "npz"}
MAX_UPLOAD_MESSAGE_BYTES = 16 * 1024
# The shape of time_ordered_id: 20 digits of epoch microseconds, '-', 8 hex digits.
BATCH_ID = re.compile(r"[0-9]{20}-[0-9a-f]{8}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CODE = re.compile(r"[a-z_]{1,32}")


class UploadMessageInvalid(ValueError):
    """An upload request or answer that does not follow the contract."""


def new_batch_id() -> str:
    return time_ordered_id()


def _object(raw: bytes | dict[str, Any], what: str) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if len(raw) > MAX_UPLOAD_MESSAGE_BYTES:
        raise UploadMessageInvalid(f"{what} is {len(raw)} bytes, over {MAX_UPLOAD_MESSAGE_BYTES}")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise UploadMessageInvalid(f"{what} is not JSON: {str(exc)[:80]}") from exc
    return Fields(doc, what, UploadMessageInvalid).doc


@dataclass(frozen=True)
class UploadRequest:
    request_id: str
    model: str
    content_type: str
    size: int
    batch_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "request_id": self.request_id,
            "model": self.model,
            "content_type": self.content_type,
            "size": self.size,
        }
        if self.batch_id is not None:
            doc["batch_id"] = self.batch_id
        return doc

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @staticmethod
    def from_json(raw: bytes | dict[str, Any]) -> UploadRequest:
        # Unknown keys are ignored: the IoT rule adds its own (topic_thing).
        f = Fields(_object(raw, "upload request"), "upload request", UploadMessageInvalid)
        content_type = f.text("content_type", max_length=64)
        if content_type not in CONTENT_TYPES:
            raise UploadMessageInvalid(
                f"content_type {content_type!r} is not one of {', '.join(CONTENT_TYPES)}"
            )
        return UploadRequest(
            request_id=f.matching("request_id", _REQUEST_ID, "1-64 letters, digits, '_' or '-'"),
            model=f.text("model", max_length=64),
            content_type=content_type,
            size=f.integer("size", low=1),
            batch_id=(
                f.matching(
                    "batch_id", BATCH_ID, "20 digits of epoch microseconds, '-', 8 hex digits"
                )
                if f.has("batch_id")
                else None
            ),
        )

    @property
    def extension(self) -> str:
        return CONTENT_TYPES[self.content_type]


@dataclass(frozen=True)
class UploadGrant:
    """One presigned POST for exactly one key, size-capped and short-lived."""

    request_id: str
    url: str
    fields: dict[str, str]
    key: str
    max_bytes: int
    expires_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "url": self.url,
            "fields": dict(self.fields),
            "key": self.key,
            "max_bytes": self.max_bytes,
            "expires_at": self.expires_at,
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())


@dataclass(frozen=True)
class UploadRefusal:
    """Why a request was not granted; `code` is for machines, `message` for people."""

    request_id: str | None
    code: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "error": {"code": self.code, "message": self.message},
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())


UploadAnswer = UploadGrant | UploadRefusal


def parse_upload_answer(raw: bytes | dict[str, Any]) -> UploadAnswer:
    """A grant or a refusal, as the device reads it from its response topic."""
    f = Fields(_object(raw, "upload answer"), "upload answer", UploadMessageInvalid)
    request_id = f.matching("request_id", _REQUEST_ID, "the request's id")
    if f.has("error"):
        error = f.child("error")
        return UploadRefusal(
            request_id,
            error.matching("code", _CODE, "a refusal code"),
            error.any_text("message", max_length=2048),
        )
    form = f.child("fields")
    return UploadGrant(
        request_id=request_id,
        url=f.text("url", max_length=2048),
        fields={str(k): form.any_text(k, max_length=8192) for k in form.doc},
        key=f.text("key", max_length=1024),
        max_bytes=f.integer("max_bytes", low=1),
        expires_at=f.text("expires_at", max_length=32),
    )
