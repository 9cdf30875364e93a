"""What a device checks of a version TUF vouched for, and of the bytes it then downloads.

Each check raises its own refusal from edgeloop.contract.errors, with a message
that says what to do.
"""

from __future__ import annotations

from edgeloop.contract.encoding import sha256_hex
from edgeloop.contract.errors import HashMismatch, InputSpecMismatch, SizeMismatch
from edgeloop.contract.manifest import Manifest, TensorSpec


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
