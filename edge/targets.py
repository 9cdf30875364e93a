"""What a refresh decides, in terms the agent can hold without python-tuf.

The verifying (ngclient, securesystemslib, cryptography) is edge.trust's, and
by default it runs in a short-lived child process (edge.trust_child), so the
agent's own process never imports it. What crosses back is what this module
defines: the offer for this thing, and each target it names as its signed path,
length and hashes. The bytes of a target always come through the repository's
`download`, which checks them against those before handing them over.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgeloop.contract.trust_targets import PatchInfo, RolloutPointer


class SignedTarget(Protocol):
    """What the agent reads of a TUF target: python-tuf's TargetFile has these."""

    @property
    def path(self) -> str: ...

    @property
    def length(self) -> int: ...

    @property
    def hashes(self) -> dict[str, str]: ...

    @property
    def custom(self) -> Any: ...


@dataclass(frozen=True)
class TargetRef:
    """A target as the verifying process described it: path, signed length and hashes."""

    path: str
    length: int
    hashes: dict[str, str]
    custom: Any = None

    @classmethod
    def of(cls, target: SignedTarget) -> TargetRef:
        return cls(target.path, target.length, dict(target.hashes), target.custom)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "length": self.length,
            "hashes": self.hashes,
            "custom": self.custom,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TargetRef:
        return cls(str(doc["path"]), int(doc["length"]), dict(doc["hashes"]), doc.get("custom"))


def sha256_of(target: SignedTarget) -> str:
    return str(target.hashes["sha256"])


@dataclass(frozen=True)
class InstalledModel:
    version: int
    sha256: str


@dataclass(frozen=True)
class Offer:
    """What the signed pointer says this thing should run, and how to get it.

    `version` is what the pointer names for this thing (None: nothing). `model`
    and the rest are set only when the installed model is not that version's
    signed bytes (higher, lower, or the same number with other bytes).
    """

    model_name: str
    version: int | None
    pointer: RolloutPointer | None
    model: SignedTarget | None = None
    compressed: Mapping[str, SignedTarget] = field(default_factory=dict)
    patch: tuple[SignedTarget, PatchInfo] | None = None
    golden: SignedTarget | None = None
    golden_cached: bool = False
    spec: SignedTarget | None = None
    fresh: bool = True  # False: a refresh within the rate limit, answered from the last one

    @property
    def update(self) -> bool:
        return self.model is not None

    def to_json(self) -> dict[str, Any]:
        def ref(target: SignedTarget | None) -> dict[str, Any] | None:
            return None if target is None else TargetRef.of(target).to_json()

        return {
            "model_name": self.model_name,
            "version": self.version,
            "pointer": None if self.pointer is None else self.pointer.to_json(),
            "model": ref(self.model),
            "compressed": {k: ref(t) for k, t in self.compressed.items()},
            "patch": None if self.patch is None else [ref(self.patch[0]), self.patch[1].to_json()],
            "golden": ref(self.golden),
            "golden_cached": self.golden_cached,
            "spec": ref(self.spec),
            "fresh": self.fresh,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Offer:
        def ref(value: Any) -> TargetRef | None:
            return None if value is None else TargetRef.from_json(value)

        patch = doc.get("patch")
        patched = None
        if patch is not None:
            patched = (TargetRef.from_json(patch[0]), PatchInfo.from_json(patch[1]))
        return cls(
            str(doc["model_name"]),
            doc.get("version"),
            None if doc.get("pointer") is None else RolloutPointer.from_json(doc["pointer"]),
            model=ref(doc.get("model")),
            compressed={str(k): TargetRef.from_json(v) for k, v in doc["compressed"].items()},
            patch=patched,
            golden=ref(doc.get("golden")),
            golden_cached=bool(doc.get("golden_cached")),
            spec=ref(doc.get("spec")),
            fresh=bool(doc.get("fresh", True)),
        )


class Repository(Protocol):
    """The fleet's repository as the updater uses it: in this process or in a child."""

    @property
    def bytes_received(self) -> int:
        """Body bytes from the CDN so far: the update line's figure."""
        ...

    def refresh(
        self,
        model: str,
        thing: str,
        installed: InstalledModel | None,
        carried: Mapping[str, bytes] | None = None,
    ) -> Offer: ...

    def download(self, target: SignedTarget, keep: bool = False) -> bytes:
        """The target's bytes, verified against its signed length and hashes."""
        ...

    def vouches_for(self, model: str, version: int, data: bytes) -> bool | None: ...

    def release(self) -> None:
        """Done with this refresh's targets: what verifying holds may go."""
        ...

    def abort(self) -> None:
        """The agent is stopping: end what verifying runs, from any thread."""
        ...


def encode_files(files: Mapping[str, bytes]) -> dict[str, str]:
    return {path: base64.b64encode(data).decode("ascii") for path, data in files.items()}


def decode_files(doc: Mapping[str, str]) -> dict[str, bytes]:
    return {str(path): base64.b64decode(data, validate=True) for path, data in doc.items()}
