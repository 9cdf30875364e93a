"""What the cloud's TUF repository and the device agree on: target paths, the
rollout pointer, and the custom metadata a patch target carries.

TUF (python-tuf) signs and verifies; this module only says what the verified
names and custom fields mean, so both sides read them through one definition.
Every target of a model lives under `{model}/`, the path pattern of the
model's delegated role.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeloop.contract.encoding import EncodingError, parse_time
from edgeloop.contract.errors import ContractError
from edgeloop.contract.manifest import (
    ArtifactRef,
    DeltaRef,
    HealthCheck,
    Manifest,
    TensorSpec,
    WindowSpec,
    load_json_object,
    optional_upload_request,
    optional_window,
    upload_request_json,
)
from edgeloop.contract.reader import Fields
from edgeloop.contract.stages import basis_points

# A model name is a TUF role name and a path segment: no dots, no slashes, and
# never one of the top-level role names.
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_TOP_LEVEL_ROLES = frozenset({"root", "targets", "snapshot", "timestamp"})
MAX_CANARIES = 32
# Where the repository lives under the CDN's base URL (and in the artifact bucket):
# `models/tuf/metadata/...`, `models/tuf/targets/...`.
REPOSITORY_PREFIX = "models/"


class MalformedTrustTarget(ContractError):
    """A verified target's custom metadata is not what this contract defines."""


def check_model_name(model: str) -> str:
    if not MODEL_NAME.fullmatch(model) or model in _TOP_LEVEL_ROLES:
        raise ValueError(
            f"model name {model!r:.80} must match {MODEL_NAME.pattern} and not be a TUF role name"
        )
    return model


def model_path(model: str, version: int) -> str:
    return f"{model}/{version}/model.tflite"


def compressed_path(model: str, version: int, encoding: str) -> str:
    return f"{model}/{version}/model.tflite.{encoding}"


def patch_path(model: str, from_version: int, version: int, codec: str) -> str:
    return f"{model}/{version}/from-{from_version}.{codec}"


def golden_path(model: str, sha256: str) -> str:
    """Content-addressed: a device that holds these golden inputs never fetches them again."""
    return f"{model}/golden/{sha256}.json"


def pointer_path(model: str) -> str:
    return f"{model}/rollout.json"


def spec_path(model: str, version: int) -> str:
    return f"{model}/{version}/spec.json"


def golden_bytes(inputs: tuple[tuple[float, ...], ...]) -> bytes:
    """The golden inputs as their target file holds them: the same rows, the same bytes."""
    rows = [list(row) for row in inputs]
    return json.dumps({"inputs": rows}, separators=(",", ":")).encode()


def golden_inputs(raw: bytes) -> tuple[tuple[float, ...], ...]:
    doc = load_json_object(raw)
    return Fields(doc, "golden", MalformedTrustTarget, known=("inputs",)).matrix("inputs")


@dataclass(frozen=True)
class VersionSpec:
    """What a device needs to know of a version besides its bytes, as a small target file:
    input and output, the health checks' expected outputs (for the golden inputs, a
    target of their own) and tolerance, the decision threshold, metrics and the
    training-time score statistics drift is measured against."""

    model: str
    version: int
    created_at: str
    input: TensorSpec
    output: TensorSpec
    expected: tuple[tuple[float, ...], ...]
    tolerance: float
    metrics: Mapping[str, float] = field(default_factory=dict)
    decision_threshold: float | None = None
    stats: Mapping[str, float] = field(default_factory=dict)
    # A signal model's windowing: signed with the version, so it is patched and
    # rolled back with the model it belongs to.
    window: WindowSpec | None = None
    # What the cloud asks this version's devices to upload (Manifest.upload_sample_rate).
    upload_sample_rate: float | None = None

    @staticmethod
    def of(manifest: Manifest) -> VersionSpec:
        """The spec of a manifest the cloud built (its one health check's inputs go apart)."""
        if len(manifest.health_checks) != 1:
            raise ValueError("a version carries exactly one health check")
        check = manifest.health_checks[0]
        return VersionSpec(
            model=manifest.model,
            version=manifest.version,
            created_at=manifest.created_at,
            input=manifest.input,
            output=manifest.output,
            expected=check.expected,
            tolerance=check.tolerance,
            metrics=manifest.metrics,
            decision_threshold=manifest.decision_threshold,
            stats=manifest.stats,
            window=manifest.window,
            upload_sample_rate=manifest.upload_sample_rate,
        )

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "model": self.model,
            "version": self.version,
            "created_at": self.created_at,
            "input": self.input.to_json(),
            "output": self.output.to_json(),
            "expected": [list(row) for row in self.expected],
            "tolerance": self.tolerance,
            "metrics": dict(self.metrics),
            "decision_threshold": self.decision_threshold,
            "stats": dict(self.stats),
        }
        if self.window is not None:
            doc["window"] = self.window.to_json()
        if self.upload_sample_rate is not None:
            doc["upload"] = upload_request_json(self.upload_sample_rate)
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @staticmethod
    def from_bytes(raw: bytes) -> VersionSpec:
        f = Fields(load_json_object(raw), "spec", MalformedTrustTarget)
        created_at = f.text("created_at", max_length=32)
        try:
            parse_time(created_at)
        except EncodingError as exc:
            raise f.fail("created_at", "a UTC time like 2026-01-31T12:00:00Z") from exc
        try:
            return VersionSpec(
                model=f.checked("model", f.text("model", max_length=64), check_model_name),
                version=f.integer("version", low=1),
                created_at=created_at,
                input=TensorSpec.from_json(f.child("input")),
                output=TensorSpec.from_json(f.child("output")),
                expected=f.matrix("expected"),
                tolerance=f.number("tolerance", low=0.0),
                metrics=f.numbers("metrics"),
                decision_threshold=f.optional_number("decision_threshold"),
                stats=f.numbers("stats"),
                window=optional_window(f),
                upload_sample_rate=optional_upload_request(f),
            )
        except ContractError as exc:  # TensorSpec's reader raises the manifest's refusal
            raise MalformedTrustTarget(str(exc)) from exc

    def manifest(
        self,
        artifact: ArtifactRef,
        golden: tuple[tuple[float, ...], ...],
        deltas: tuple[DeltaRef, ...] = (),
    ) -> Manifest:
        """The version as the device keeps it, from what TUF vouched for."""
        if len(golden) != len(self.expected):
            raise MalformedTrustTarget(
                f"{self.model} v{self.version}: {len(golden)} golden inputs but "
                f"{len(self.expected)} expected outputs"
            )
        return Manifest(
            model=self.model,
            version=self.version,
            created_at=self.created_at,
            input=self.input,
            output=self.output,
            artifact=artifact,
            deltas=deltas,
            metrics=self.metrics,
            decision_threshold=self.decision_threshold,
            health_checks=(HealthCheck(golden, self.expected, self.tolerance),),
            stats=self.stats,
            window=self.window,
            upload_sample_rate=self.upload_sample_rate,
        )


@dataclass(frozen=True)
class PatchInfo:
    """Custom metadata of a patch target: what it applies to and what it makes."""

    codec: str
    base_version: int
    base_sha256: str
    produces: str  # the model target path whose hashes the patched bytes must have

    def to_json(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "base_version": self.base_version,
            "base_sha256": self.base_sha256,
            "produces": self.produces,
        }

    @classmethod
    def from_json(cls, doc: Any) -> PatchInfo:
        f = Fields(doc, "patch", MalformedTrustTarget)
        return cls(
            codec=f.text("codec", max_length=32),
            base_version=f.integer("base_version", low=1),
            base_sha256=f.sha256("base_sha256"),
            produces=f.text("produces", max_length=256),
        )


@dataclass(frozen=True)
class RolloutPointer:
    """Which version of a model each device should run, signed in the model's role.

    `offered` goes to the covered devices (named canaries, then `percent` of the
    fleet by stable band); every other device keeps `previous` (None: nothing
    yet). Moving `offered` back is an abort: a device that refreshes is no
    longer offered the withdrawn version, whatever nudge it heard.
    """

    model: str
    offered: int
    previous: int | None
    percent: int
    canaries: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_model_name(self.model)
        if self.offered < 1 or (self.previous is not None and self.previous < 1):
            raise ValueError("versions start at 1")
        if not 0 <= self.percent <= 100:
            raise ValueError(f"percent must be in [0, 100], not {self.percent}")
        if len(self.canaries) > MAX_CANARIES:
            raise ValueError(f"at most {MAX_CANARIES} named canaries; use the percentage")

    def covers(self, thing: str) -> bool:
        return thing in self.canaries or basis_points(thing) < self.percent * 100

    def version_for(self, thing: str) -> int | None:
        return self.offered if self.covers(thing) else self.previous

    @property
    def versions(self) -> tuple[int, ...]:
        """The versions some device may be told to run: their targets must stay."""
        return (self.offered,) if self.previous is None else (self.offered, self.previous)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "offered": self.offered,
            "previous": self.previous,
            "percent": self.percent,
            "canaries": list(self.canaries),
        }

    @classmethod
    def from_json(cls, doc: Any) -> RolloutPointer:
        f = Fields(doc, "rollout", MalformedTrustTarget, known=cls.__dataclass_fields__)
        canaries = f.doc.get("canaries", [])
        if not isinstance(canaries, list) or not all(
            isinstance(c, str) and 0 < len(c) <= 128 for c in canaries
        ):
            raise f.fail("canaries", "a list of thing names")
        try:
            return cls(
                model=f.text("model", max_length=64),
                offered=f.integer("offered", low=1),
                previous=f.optional_integer("previous", low=1),
                percent=f.integer("percent", low=0, high=100),
                canaries=tuple(canaries),
            )
        except ValueError as exc:
            raise MalformedTrustTarget(f"rollout: {exc}") from exc
