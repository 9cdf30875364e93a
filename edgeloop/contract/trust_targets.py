"""What the cloud's TUF repository and the device agree on: target paths, the
rollout pointer, and the custom metadata a patch target carries.

TUF (python-tuf) signs and verifies; this module only says what the verified
names and custom fields mean, so both sides read them through one definition.
Every target of a model lives under `{model}/`, the path pattern of the
model's delegated role.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edgeloop.contract.errors import ContractError
from edgeloop.contract.reader import Fields
from edgeloop.contract.stages import basis_points

# A model name is a TUF role name and a path segment: no dots, no slashes, and
# never one of the top-level role names.
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_TOP_LEVEL_ROLES = frozenset({"root", "targets", "snapshot", "timestamp"})
MAX_CANARIES = 32


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
    longer offered the withdrawn version, whatever announcement it saw.
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
