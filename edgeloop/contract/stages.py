"""Which band of the fleet a device is in: one stable number per thing name."""

from __future__ import annotations

import hashlib


def basis_points(thing: str) -> int:
    """0..9999 from the SHA-256 of the thing name, stable across restarts and releases.

    A device's band is `basis_points(thing) // 100`; a rollout at p percent covers
    the devices whose basis points are below p * 100, so raising the percentage
    only ever adds devices.
    """
    digest = hashlib.sha256(thing.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 10_000
