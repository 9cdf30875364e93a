"""What a device checks of a version TUF vouched for, and of the bytes it then downloads.

Each check raises its own refusal from edgeloop.contract.errors, with a message
that says what to do.
"""

from __future__ import annotations

from edgeloop.contract.encoding import sha256_hex
from edgeloop.contract.errors import HashMismatch, InputSpecMismatch, SizeMismatch
from edgeloop.contract.manifest import Manifest, TensorSpec, WindowSpec


def check_input(
    manifest: Manifest, device_input: TensorSpec, raw_source: WindowSpec | None = None
) -> None:
    """Refuse a model whose input this device cannot produce.

    `raw_source` describes a device whose source delivers raw samples (its channels
    and sample rate): it can feed any signal model windowing a subset of its
    channels at its rate, whatever the window and hop, and no feature model.
    """
    window = manifest.window
    where = f"model {manifest.model} v{manifest.version}"
    if raw_source is None and window is not None:
        raise InputSpecMismatch(
            f"{where} takes raw windows of channels {', '.join(window.channels)} "
            "but this device's source delivers feature vectors; give the device a raw "
            "source (source.channels) or deploy a feature model to it"
        )
    if raw_source is not None:
        if window is None:
            raise InputSpecMismatch(
                f"{where} takes feature vectors but this device's source delivers raw "
                f"samples of {', '.join(raw_source.channels)}; deploy a signal model to it"
            )
        missing = [c for c in window.channels if c not in raw_source.channels]
        if missing:
            raise InputSpecMismatch(
                f"{where} windows channel {missing[0]!r}, which this device's source does "
                f"not deliver (source.channels: {', '.join(raw_source.channels)})"
            )
        if window.sample_rate != raw_source.sample_rate:
            raise InputSpecMismatch(
                f"{where} was trained on samples at {window.sample_rate:g} Hz, this device's "
                f"source delivers {raw_source.sample_rate:g} Hz (source.sample_rate)"
            )
        if manifest.input.shape[-1:] != (window.width,):
            raise InputSpecMismatch(
                f"{where} declares input {manifest.input.to_json()}, not the "
                f"{window.width} values its window holds"
            )
        return
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
