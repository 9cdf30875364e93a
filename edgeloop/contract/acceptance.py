"""What a device checks of a verified manifest, and of the bytes it then downloads.

Each check raises its own refusal from edgeloop.contract.errors, with a message
that says what to do.
"""

from __future__ import annotations

from datetime import datetime

from edgeloop.contract.encoding import format_time, sha256_hex
from edgeloop.contract.errors import (
    HashMismatch,
    InputSpecMismatch,
    ManifestExpired,
    SizeMismatch,
    VersionNotNewer,
)
from edgeloop.contract.manifest import Manifest, TensorSpec


def check_fresh(manifest: Manifest, now: datetime) -> None:
    if manifest.expires <= now:
        raise ManifestExpired(
            f"manifest for {manifest.model} v{manifest.version} expired at "
            f"{manifest.expires_at} (now {format_time(now)}); the cloud must re-sign and "
            "re-announce it, or the device clock is wrong"
        )


def check_newer(manifest: Manifest, installed_version: int | None) -> None:
    if installed_version is not None and manifest.version <= installed_version:
        raise VersionNotNewer(
            f"manifest for {manifest.model} offers v{manifest.version} but v{installed_version} "
            "is installed; versions only go up (a rollback is published as a new, higher version)"
        )


def check_input(manifest: Manifest, device_input: TensorSpec) -> None:
    if not manifest.input.accepts(device_input):
        raise InputSpecMismatch(
            f"model {manifest.model} v{manifest.version} expects input {manifest.input.to_json()} "
            f"but this device produces {device_input.to_json()}; fix the model config or the "
            "device's data source"
        )


def check_blob(data: bytes, *, size: int, sha256: str, what: str) -> None:
    """Refuse bytes that are not exactly what the manifest declares."""
    if len(data) != size:
        raise SizeMismatch(
            f"{what} is {len(data)} bytes but the manifest declares {size}; "
            "the download is truncated or was replaced, fetch it again"
        )
    actual = sha256_hex(data)
    if actual != sha256:
        raise HashMismatch(
            f"{what} has SHA-256 {actual} but the manifest declares {sha256}; "
            "the bytes were tampered with or corrupted, discard them"
        )
