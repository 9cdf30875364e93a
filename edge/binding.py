"""What a signature cannot say: that a manifest is for this device, and when "now" is.

A fleet key signs manifests for every model, so a valid signature alone would
let one model's release install on another model's devices (same input width
is enough). And a device without a real-time clock starts in the past, where
an expired manifest still looks fresh; but it has seen proof of a later time,
the newest `created_at` it has trusted, which the store keeps. That is the
clock's floor.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from edge.errors import ClockBehind, NotThisDevice
from edgeloop.contract import Manifest, format_time

# Clocks of healthy devices and of the cloud differ by seconds; more is a wrong clock.
CLOCK_SKEW = timedelta(minutes=5)


def device_now(clock: datetime, floor: datetime | None) -> datetime:
    """The device's best idea of now: its clock, unless that is behind what it has seen."""
    return clock if floor is None or clock >= floor else floor


def check_binding(manifest: Manifest, model: str, now: datetime) -> None:
    """Refuse a verified manifest that is not for this device, or whose dates cannot be."""
    if manifest.model != model:
        raise NotThisDevice(
            f"manifest is for model {manifest.model!r}, this device runs {model!r}; "
            "it was published to the wrong topic, or replayed there",
            version=None,
        )
    if manifest.expires <= manifest.created:
        raise NotThisDevice(
            f"manifest for {manifest.model} v{manifest.version} expires at "
            f"{manifest.expires_at}, not after its creation at {manifest.created_at}",
            version=manifest.version,
        )
    if manifest.created > now + CLOCK_SKEW:
        raise ClockBehind(
            f"manifest for {manifest.model} v{manifest.version} was created at "
            f"{manifest.created_at}, after this device's clock ({format_time(now)}); "
            "the clock is not set yet (it is tried again later) or the manifest is misdated",
            version=manifest.version,
        )
