"""What the signatures cannot say: that a version is for this device, and when "now" is.

The online key signs every model's role, so a version's spec naming another
model must not install here, whatever role it came in. And a device without
a real-time clock starts in the past, where expired metadata still looks
fresh; but it has seen proof of a later time, the newest `created_at` it has
installed, which the store keeps as the clock's floor (the updater does not
refresh while the clock is behind it).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from edge.errors import ClockBehind, NotThisDevice
from edgeloop.contract import Manifest, format_time

# Clocks of healthy devices and of the cloud differ by seconds; more is a wrong clock.
CLOCK_SKEW = timedelta(minutes=5)


def check_binding(manifest: Manifest, model: str, now: datetime) -> None:
    """Refuse a verified version that is not for this device, or dated after now."""
    if manifest.model != model:
        raise NotThisDevice(
            f"the version offered is of model {manifest.model!r}, this device runs {model!r}",
            version=None,
        )
    if manifest.created > now + CLOCK_SKEW:
        raise ClockBehind(
            f"{manifest.model} v{manifest.version} was created at {manifest.created_at}, "
            f"after this device's clock ({format_time(now)}); the clock is not set yet "
            "(it is tried again later) or the version is misdated",
            version=manifest.version,
        )
