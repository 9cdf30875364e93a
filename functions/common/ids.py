"""Time-ordered ids: S3 keys and run ids that sort in the order they were made."""

from __future__ import annotations

import secrets
import time


def time_ordered_id(now_ns: int | None = None) -> str:
    """20 digits of epoch microseconds, then 8 random hex digits."""
    micros = (now_ns if now_ns is not None else time.time_ns()) // 1000
    return f"{micros:020d}-{secrets.token_hex(4)}"
