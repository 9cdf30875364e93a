"""The manifest: what a model version is, where its bytes are, and who vouches for it.

A manifest travels as canonical JSON (sorted keys, UTF-8, no insignificant
whitespace). Its signature covers every field but itself, so any field the
cloud adds is covered too, even one an older agent does not know.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from edgeloop.contract.errors import (
    HashMismatch,
    InputSpecMismatch,
    MalformedManifest,
    ManifestExpired,
    SizeMismatch,
    VersionNotNewer,
)
from edgeloop.contract.topics import check_model_name

CODECS = ("bsdiff4", "zstd", "wdiff")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def canonical_json(value: Any) -> bytes:
    """The one byte form of a JSON value that both sides hash and sign."""
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except ValueError as exc:
        raise MalformedManifest(
            f"value cannot be written as canonical JSON ({exc}); replace NaN or infinity "
            "with a finite number"
        ) from exc
    return text.encode("utf-8")


def format_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware; pass datetime.now(UTC)")
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def parse_time(text: str, what: str) -> datetime:
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)
    except (TypeError, ValueError) as exc:
        raise MalformedManifest(
            f"{what} is {text!r}, not a UTC time like 2026-01-31T12:00:00Z"
        ) from exc


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class TensorSpec:
    """Shape (-1 for the batch axis), element type and axis names of one tensor."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    names: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype, "names": list(self.names)}

    def accepts(self, other: TensorSpec) -> bool:
        """True when data shaped like `other` fits a model that expects `self`."""
        if self.dtype != other.dtype or len(self.shape) != len(other.shape):
            return False
        if any(a != b and -1 not in (a, b) for a, b in zip(self.shape, other.shape, strict=True)):
            return False
        return not (self.names and other.names and self.names != other.names)


# How a full artifact may also be published compressed (edgeloop.delta.compress_full).
FULL_ENCODINGS = ("zstd",)


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


@dataclass(frozen=True)
class Signature:
    alg: str
    key_id: str
    value: str

    def to_json(self) -> dict[str, Any]:
        return {"alg": self.alg, "key_id": self.key_id, "value": self.value}


@dataclass(frozen=True)
class Manifest:
    model: str
    version: int
    created_at: str
    expires_at: str
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
    signature: Signature | None = None

    def unsigned_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "input": self.input.to_json(),
            "output": self.output.to_json(),
            "artifact": self.artifact.to_json(),
            "deltas": [d.to_json() for d in self.deltas],
            "metrics": dict(self.metrics),
            "decision_threshold": self.decision_threshold,
            "health_checks": [h.to_json() for h in self.health_checks],
            "stats": dict(self.stats),
        }

    def to_json(self) -> dict[str, Any]:
        doc = self.unsigned_json()
        if self.signature is not None:
            doc["signature"] = self.signature.to_json()
        return doc

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    def signing_payload(self) -> bytes:
        return canonical_json(self.unsigned_json())

    def with_signature(self, signature: Signature) -> Manifest:
        return replace(self, signature=signature)

    @property
    def created(self) -> datetime:
        return parse_time(self.created_at, "created_at")

    @property
    def expires(self) -> datetime:
        return parse_time(self.expires_at, "expires_at")

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
        valid_for: timedelta,
        now: datetime | None = None,
        **rest: Any,
    ) -> Manifest:
        created = now or datetime.now(UTC)
        return Manifest(
            model=model,
            version=version,
            created_at=format_time(created),
            expires_at=format_time(created + valid_for),
            input=input,
            output=output,
            artifact=artifact,
            **rest,
        )


# --- parsing -------------------------------------------------------------------------


class _Fields:
    """Reads typed fields from a JSON object, naming the full path in every refusal."""

    def __init__(self, doc: Any, where: str) -> None:
        if not isinstance(doc, dict):
            raise MalformedManifest(f"{where} must be a JSON object, not {type(doc).__name__}")
        self.doc: dict[str, Any] = doc
        self.where = where

    def _get(self, key: str) -> Any:
        if key not in self.doc:
            raise MalformedManifest(f"{self.where}.{key} is missing; the manifest is incomplete")
        return self.doc[key]

    def _wrong(self, key: str, expected: str) -> MalformedManifest:
        got = self.doc.get(key)
        return MalformedManifest(f"{self.where}.{key} must be {expected}, not {got!r:.80}")

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not value:
            raise self._wrong(key, "a non-empty string")
        return value

    def integer(self, key: str, minimum: int = 0) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._wrong(key, f"an integer >= {minimum}")
        return value

    def sha256(self, key: str) -> str:
        value = self.text(key)
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise self._wrong(key, "64 lower-case hex digits (a SHA-256)")
        return value

    def number(self, key: str) -> float:
        return _number(self._get(key), f"{self.where}.{key}")

    def optional_number(self, key: str) -> float | None:
        value = self._get(key)
        return None if value is None else _number(value, f"{self.where}.{key}")

    def numbers(self, key: str) -> dict[str, float]:
        value = self._get(key)
        if not isinstance(value, dict):
            raise self._wrong(key, "an object of numbers")
        return {str(k): _number(v, f"{self.where}.{key}.{k}") for k, v in value.items()}

    def items(self, key: str) -> list[Any]:
        value = self._get(key)
        if not isinstance(value, list):
            raise self._wrong(key, "a list")
        return value

    def child(self, key: str) -> _Fields:
        return _Fields(self._get(key), f"{self.where}.{key}")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedManifest(f"{where} must be a finite number, not {value!r:.80}")
    return float(value)


def _matrix(rows: Any, where: str) -> tuple[tuple[float, ...], ...]:
    if not isinstance(rows, list) or not rows:
        raise MalformedManifest(f"{where} must be a non-empty list of rows")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or not row:
            raise MalformedManifest(f"{where}[{i}] must be a non-empty list of numbers")
        out.append(tuple(_number(v, f"{where}[{i}]") for v in row))
    return tuple(out)


def _tensor_spec(f: _Fields) -> TensorSpec:
    shape = f.items("shape")
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < -1 for d in shape):
        raise MalformedManifest(f"{f.where}.shape must be a list of sizes (-1 for any)")
    names = f.items("names")
    if any(not isinstance(n, str) for n in names):
        raise MalformedManifest(f"{f.where}.names must be a list of strings")
    return TensorSpec(shape=tuple(shape), dtype=f.text("dtype"), names=tuple(names))


def _artifact(f: _Fields) -> ArtifactRef:
    compressed = None
    if f.doc.get("compressed") is not None:
        c = f.child("compressed")
        # An unknown encoding is kept, like an unknown codec: the agent just
        # fetches the uncompressed artifact instead.
        compressed = CompressedRef(
            encoding=c.text("encoding"),
            path=_path(c),
            sha256=c.sha256("sha256"),
            size=c.integer("size", 1),
        )
    return ArtifactRef(
        path=_path(f), sha256=f.sha256("sha256"), size=f.integer("size", 1), compressed=compressed
    )


def _path(f: _Fields) -> str:
    path = f.text("path")
    # Paths are relative to the CDN base; '..' or a scheme would let a manifest
    # point the device anywhere.
    if path.startswith("/") or "://" in path or ".." in path.split("/"):
        raise MalformedManifest(f"{f.where}.path {path!r} must be a relative path without '..'")
    return path


def _delta(f: _Fields) -> DeltaRef:
    # An unknown codec is kept, not refused: a newer cloud may offer codecs this
    # agent lacks, and Manifest.delta_from simply never picks them.
    return DeltaRef(
        from_version=f.integer("from_version", 1),
        from_sha256=f.sha256("from_sha256"),
        codec=f.text("codec"),
        path=_path(f),
        sha256=f.sha256("sha256"),
        size=f.integer("size", 1),
    )


def _health_check(f: _Fields) -> HealthCheck:
    check = HealthCheck(
        inputs=_matrix(f.doc.get("inputs"), f"{f.where}.inputs"),
        expected=_matrix(f.doc.get("expected"), f"{f.where}.expected"),
        tolerance=f.number("tolerance"),
    )
    if len(check.inputs) != len(check.expected):
        raise MalformedManifest(
            f"{f.where} has {len(check.inputs)} inputs but {len(check.expected)} expected outputs"
        )
    return check


def signature_from_json(doc: dict[str, Any]) -> Signature | None:
    if doc.get("signature") is None:
        return None
    s = _Fields(doc, "manifest").child("signature")
    return Signature(alg=s.text("alg"), key_id=s.text("key_id"), value=s.text("value"))


def manifest_from_json(doc: Any) -> Manifest:
    f = _Fields(doc, "manifest")
    model = f.text("model")
    try:
        check_model_name(model)
    except ValueError as exc:
        raise MalformedManifest(f"manifest.model: {exc}") from exc
    manifest = Manifest(
        model=model,
        version=f.integer("version", 1),
        created_at=f.text("created_at"),
        expires_at=f.text("expires_at"),
        input=_tensor_spec(f.child("input")),
        output=_tensor_spec(f.child("output")),
        artifact=_artifact(f.child("artifact")),
        deltas=tuple(
            _delta(_Fields(d, f"manifest.deltas[{i}]")) for i, d in enumerate(f.items("deltas"))
        ),
        metrics=f.numbers("metrics"),
        decision_threshold=f.optional_number("decision_threshold"),
        health_checks=tuple(
            _health_check(_Fields(h, f"manifest.health_checks[{i}]"))
            for i, h in enumerate(f.items("health_checks"))
        ),
        stats=f.numbers("stats"),
        signature=signature_from_json(f.doc),
    )
    # Both times must parse; a manifest with an unreadable expiry is not "never expires".
    _ = manifest.created, manifest.expires
    return manifest


def load_json_object(raw: bytes) -> dict[str, Any]:
    """Decode manifest bytes to a JSON object, refusing anything else with a reason."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MalformedManifest(
            f"manifest is not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from exc
    except json.JSONDecodeError as exc:
        raise MalformedManifest(f"manifest is not valid JSON: {exc.msg} at char {exc.pos}") from exc
    except RecursionError as exc:
        raise MalformedManifest("manifest JSON is nested too deeply") from exc
    return _Fields(doc, "manifest").doc


def parse_manifest(raw: bytes) -> tuple[Manifest, dict[str, Any]]:
    """Parse manifest bytes without checking the signature (see TrustedKeys.verify).

    Returns the typed manifest and the raw JSON object.
    """
    doc = load_json_object(raw)
    return manifest_from_json(doc), doc


# --- acceptance ----------------------------------------------------------------------


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
