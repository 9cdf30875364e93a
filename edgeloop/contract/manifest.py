"""The manifest: what a model version is and where its bytes are, as the device keeps it.

Nobody signs a manifest any more and no device receives one: the device
assembles it from what the fleet's TUF repository vouched for (the model,
compressed and patch targets with their hashes, the version's spec and golden
inputs; see edgeloop.contract.trust_targets) and keeps it beside the installed
model. Each type reads itself (`from_json`) right beside the way it writes
itself (`to_json`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edgeloop.contract.encoding import (
    EncodingError,
    canonical_json,
    format_time,
    parse_time,
    utc_now,
)
from edgeloop.contract.errors import MalformedManifest
from edgeloop.contract.reader import Fields
from edgeloop.contract.topics import check_model_name

CODECS = ("bsdiff4", "zstd", "wdiff")
# How a full artifact may also be published compressed (edgeloop.delta.compress_full).
FULL_ENCODINGS = ("zstd",)
# A manifest or a version's spec is a few KB; anything larger is not one. Checked
# before parsing, so a flood of bytes costs the device nothing but the read.
MAX_MANIFEST_BYTES = 256 * 1024

# Paths are relative to the CDN base and written from a small alphabet: a
# scheme, '..' or a character a URL would have to escape would let a manifest
# point the device elsewhere, or break the request it makes.
_PATH = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


def _path(f: Fields) -> str:
    path = f.text("path", max_length=512)
    if not _PATH.fullmatch(path) or ".." in path.split("/"):
        raise MalformedManifest(
            f"{f.path('path')} {path!r:.80} must be a relative path of letters, digits, "
            "'_', '.', '-' and '/', without '..'"
        )
    return path


def _time(f: Fields, key: str) -> str:
    text = f.text(key, max_length=32)
    try:
        parse_time(text)
    except EncodingError as exc:
        raise MalformedManifest(
            f"{f.path(key)} is {text!r}, not a UTC time like 2026-01-31T12:00:00Z"
        ) from exc
    return text


@dataclass(frozen=True)
class TensorSpec:
    """Shape (-1 for the batch axis), element type and axis names of one tensor."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    names: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype, "names": list(self.names)}

    @staticmethod
    def from_json(f: Fields) -> TensorSpec:
        shape = f.items("shape", max_items=8)
        if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < -1 for d in shape):
            raise MalformedManifest(f"{f.path('shape')} must be a list of sizes (-1 for any)")
        names = f.items("names", max_items=65536)
        if any(not isinstance(n, str) for n in names):
            raise MalformedManifest(f"{f.path('names')} must be a list of strings")
        return TensorSpec(
            shape=tuple(shape), dtype=f.text("dtype", max_length=16), names=tuple(names)
        )

    def accepts(self, other: TensorSpec) -> bool:
        """True when data shaped like `other` fits a model that expects `self`."""
        if self.dtype != other.dtype or len(self.shape) != len(other.shape):
            return False
        if any(a != b and -1 not in (a, b) for a, b in zip(self.shape, other.shape, strict=True)):
            return False
        return not (self.names and other.names and self.names != other.names)


# Bounds a device checks before it sizes ring buffers from a spec: the factory's
# own limits (edgeloop.factory.signal.MAX_WINDOW, MAX_CHANNELS).
MAX_WINDOW_SAMPLES = 4096
MAX_WINDOW_CHANNELS = 64


@dataclass(frozen=True)
class WindowSpec:
    """How a signal model's input row is cut from a live stream: the channels, in the
    row's order, the sample rate they were trained at, the window and the hop in
    samples. The row is `window x channels` values, sample-major."""

    channels: tuple[str, ...]
    sample_rate: float
    window: int
    hop: int

    @property
    def width(self) -> int:
        return self.window * len(self.channels)

    def to_json(self) -> dict[str, Any]:
        return {
            "channels": list(self.channels),
            "sample_rate": self.sample_rate,
            "window": self.window,
            "hop": self.hop,
        }

    @staticmethod
    def from_json(f: Fields) -> WindowSpec:
        channels = f.items("channels", max_items=MAX_WINDOW_CHANNELS)
        if (
            not channels
            or any(not isinstance(c, str) or not c or len(c) > 64 for c in channels)
            or len(set(channels)) != len(channels)
        ):
            raise MalformedManifest(
                f"{f.path('channels')} must be 1 to {MAX_WINDOW_CHANNELS} distinct channel names"
            )
        window = f.integer("window", low=2, high=MAX_WINDOW_SAMPLES)
        return WindowSpec(
            channels=tuple(channels),
            sample_rate=f.number("sample_rate", low=1e-9, high=1e7),
            window=window,
            hop=f.integer("hop", low=1, high=window),
        )


def optional_window(f: Fields) -> WindowSpec | None:
    return WindowSpec.from_json(f.child("window")) if f.has("window") else None


def upload_request_json(sample_rate: float) -> dict[str, Any]:
    return {"sample_rate": sample_rate}


def optional_upload_request(f: Fields) -> float | None:
    """The share of samples a version asks its devices to upload, if it asks."""
    if not f.has("upload"):
        return None
    return f.child("upload").number("sample_rate", low=0.0, high=1.0)


@dataclass(frozen=True)
class CompressedRef:
    """The same full artifact, compressed: what a device without a usable patch fetches."""

    encoding: str
    path: str
    sha256: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "encoding": self.encoding,
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
        }

    @staticmethod
    def from_json(f: Fields) -> CompressedRef:
        # An unknown encoding is kept, like an unknown codec: the agent just
        # fetches the uncompressed artifact instead.
        return CompressedRef(
            encoding=f.text("encoding", max_length=32),
            path=_path(f),
            sha256=f.sha256("sha256"),
            size=f.integer("size", low=1),
        )


@dataclass(frozen=True)
class ArtifactRef:
    path: str
    sha256: str
    size: int
    compressed: CompressedRef | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"path": self.path, "sha256": self.sha256, "size": self.size}
        if self.compressed is not None:
            doc["compressed"] = self.compressed.to_json()
        return doc

    @staticmethod
    def from_json(f: Fields) -> ArtifactRef:
        compressed = CompressedRef.from_json(f.child("compressed")) if f.has("compressed") else None
        return ArtifactRef(
            path=_path(f),
            sha256=f.sha256("sha256"),
            size=f.integer("size", low=1),
            compressed=compressed,
        )


@dataclass(frozen=True)
class DeltaRef:
    """A patch that turns the model with `from_sha256` into this manifest's artifact."""

    from_version: int
    from_sha256: str
    codec: str
    path: str
    sha256: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "from_version": self.from_version,
            "from_sha256": self.from_sha256,
            "codec": self.codec,
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
        }

    @staticmethod
    def from_json(f: Fields) -> DeltaRef:
        # An unknown codec is kept, not refused: a newer cloud may offer codecs this
        # agent lacks, and Manifest.delta_from simply never picks them.
        return DeltaRef(
            from_version=f.integer("from_version", low=1),
            from_sha256=f.sha256("from_sha256"),
            codec=f.text("codec", max_length=32),
            path=_path(f),
            sha256=f.sha256("sha256"),
            size=f.integer("size", low=1),
        )


@dataclass(frozen=True)
class HealthCheck:
    """Golden inputs and the outputs the new model must give for them."""

    inputs: tuple[tuple[float, ...], ...]
    expected: tuple[tuple[float, ...], ...]
    tolerance: float

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": [list(row) for row in self.inputs],
            "expected": [list(row) for row in self.expected],
            "tolerance": self.tolerance,
        }

    @staticmethod
    def from_json(f: Fields) -> HealthCheck:
        check = HealthCheck(
            inputs=f.matrix("inputs"),
            expected=f.matrix("expected"),
            tolerance=f.number("tolerance", low=0.0),
        )
        if len(check.inputs) != len(check.expected):
            raise MalformedManifest(
                f"{f.where} has {len(check.inputs)} inputs but {len(check.expected)} "
                "expected outputs"
            )
        return check


@dataclass(frozen=True)
class Manifest:
    model: str
    version: int
    created_at: str
    input: TensorSpec
    output: TensorSpec
    artifact: ArtifactRef
    deltas: tuple[DeltaRef, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    decision_threshold: float | None = None
    health_checks: tuple[HealthCheck, ...] = ()
    # Training-time score statistics (mean, std, quantiles, expected alarm rate)
    # that the agent compares its rolling scores with to report drift.
    stats: Mapping[str, float] = field(default_factory=dict)
    # A signal model's windowing (None: the input is a feature vector).
    window: WindowSpec | None = None
    # The share of samples the cloud asks this version's devices to upload beside
    # every alarm (None: the device's own `upload.sample_rate`): set while the version
    # is under its model's goal, so the data that would improve it arrives sooner.
    upload_sample_rate: float | None = None

    def to_json(self) -> dict[str, Any]:
        doc = {
            "model": self.model,
            "version": self.version,
            "created_at": self.created_at,
            "input": self.input.to_json(),
            "output": self.output.to_json(),
            "artifact": self.artifact.to_json(),
            "deltas": [d.to_json() for d in self.deltas],
            "metrics": dict(self.metrics),
            "decision_threshold": self.decision_threshold,
            "health_checks": [h.to_json() for h in self.health_checks],
            "stats": dict(self.stats),
        }
        # Absent rather than null for a feature model: its bytes stay what they were.
        if self.window is not None:
            doc["window"] = self.window.to_json()
        if self.upload_sample_rate is not None:
            doc["upload"] = upload_request_json(self.upload_sample_rate)
        return doc

    @staticmethod
    def from_json(doc: Any) -> Manifest:
        """Every field typed and checked."""
        f = Fields(doc, "manifest", MalformedManifest)
        return Manifest(
            model=f.checked("model", f.text("model", max_length=64), check_model_name),
            version=f.integer("version", low=1),
            created_at=_time(f, "created_at"),
            input=TensorSpec.from_json(f.child("input")),
            output=TensorSpec.from_json(f.child("output")),
            artifact=ArtifactRef.from_json(f.child("artifact")),
            deltas=tuple(DeltaRef.from_json(d) for d in f.children("deltas")),
            metrics=f.numbers("metrics"),
            decision_threshold=f.optional_number("decision_threshold"),
            health_checks=tuple(HealthCheck.from_json(h) for h in f.children("health_checks")),
            stats=f.numbers("stats"),
            window=optional_window(f),
            upload_sample_rate=optional_upload_request(f),
        )

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @property
    def created(self) -> datetime:
        return parse_time(self.created_at)

    def delta_from(self, installed_sha256: str) -> DeltaRef | None:
        """The smallest patch whose base is the installed model, if the manifest has one."""
        usable = [d for d in self.deltas if d.from_sha256 == installed_sha256 and d.codec in CODECS]
        return min(usable, key=lambda d: d.size) if usable else None

    @staticmethod
    def new(
        *,
        model: str,
        version: int,
        input: TensorSpec,
        output: TensorSpec,
        artifact: ArtifactRef,
        now: datetime | None = None,
        **rest: Any,
    ) -> Manifest:
        created = now or utc_now()
        return Manifest(
            model=model,
            version=version,
            created_at=format_time(created),
            input=input,
            output=output,
            artifact=artifact,
            **rest,
        )


def load_json_object(raw: bytes) -> dict[str, Any]:
    """Decode manifest bytes to a JSON object, refusing anything else with a reason.

    The size is checked before anything is parsed, and every way `json.loads`
    can refuse (bad UTF-8, bad JSON, an integer over Python's digit limit,
    nesting too deep) becomes MalformedManifest.
    """
    if len(raw) > MAX_MANIFEST_BYTES:
        raise MalformedManifest(
            f"manifest is {len(raw)} bytes, over the {MAX_MANIFEST_BYTES}-byte limit"
        )
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MalformedManifest(
            f"manifest is not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from exc
    except json.JSONDecodeError as exc:
        raise MalformedManifest(f"manifest is not valid JSON: {exc.msg} at char {exc.pos}") from exc
    except (ValueError, RecursionError) as exc:
        raise MalformedManifest(f"manifest JSON cannot be read: {str(exc)[:120]}") from exc
    return Fields(doc, "manifest", MalformedManifest).doc


def parse_manifest(raw: bytes) -> Manifest:
    return Manifest.from_json(load_json_object(raw))
