"""How the contract writes bytes and times: canonical JSON, SHA-256, UTC timestamps, ids.

Both sides hash and sign the same bytes, so there is exactly one way to write
a JSON value, one way to write a time, and one way to make a time-ordered id.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class EncodingError(ValueError):
    """A value that has no canonical form (NaN, infinity, a naive time)."""


def canonical_json(value: Any) -> bytes:
    """The one byte form of a JSON value: sorted keys, UTF-8, no insignificant whitespace."""
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except ValueError as exc:
        raise EncodingError(
            f"value cannot be written as canonical JSON ({exc}); replace NaN or infinity "
            "with a finite number"
        ) from exc
    return text.encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """A UTC time as the contract writes it, to the second: 2026-01-31T12:00:00Z."""
    if moment.tzinfo is None:
        raise EncodingError("timestamps must be timezone-aware; pass datetime.now(UTC)")
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def parse_time(text: object) -> datetime:
    """The inverse of `format_time`; EncodingError for anything else."""
    try:
        return datetime.strptime(str(text), _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise EncodingError(f"{text!r:.40} is not a UTC time like 2026-01-31T12:00:00Z") from exc


def time_ordered_id(now_ns: int | None = None) -> str:
    """20 digits of epoch microseconds, '-', 8 random hex digits: ids that sort by creation."""
    micros = (now_ns if now_ns is not None else time.time_ns()) // 1000
    return f"{micros:020d}-{secrets.token_hex(4)}"
