"""What the CDN sent each device, named for what it is.

The CDN stand-in logs every response by path. Devices fetch only from the
fleet's TUF repository (`models/tuf/`), and the demo reports four kinds apart:
the signed metadata and the small files beside a version (its spec, golden
inputs), the full model (`….model.tflite`), the zstd-compressed full model
(`….model.tflite.zstd`, what a device without a usable patch fetches) and
patches (`….from-{version}.{codec}`). Target files are hash-prefixed:
`models/tuf/targets/{model}/{version}/{sha256}.{name}`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

KINDS = ("metadata", "patch", "compressed", "full")
# What came over MQTT rather than the CDN: the nudges, with the metadata, spec and
# patch they carry when those fit one message (counted by each agent, not logged here).
NUDGE = "nudge"
LABELS = {
    NUDGE: "nudges over MQTT (with what they carry)",
    "metadata": "signed metadata, spec, golden inputs",
    "patch": "patches",
    "compressed": "compressed full model (.zstd)",
    "full": "full model (.tflite)",
}
_TARGETS = "models/tuf/targets/"


class Logged(Protocol):
    device: str
    path: str
    bytes: int


def kind_of(path: str) -> str:
    if not path.startswith(_TARGETS):
        return "metadata" if path.startswith("models/tuf/metadata/") else "other"
    name = path.rsplit("/", 1)[-1].split(".", 1)[-1]
    if name == "model.tflite":
        return "full"
    if name == "model.tflite.zstd":
        return "compressed"
    if name.startswith("from-"):
        return "patch"
    return "metadata"


def version_of(path: str) -> int | None:
    """The version a target file belongs to; None for metadata and golden inputs."""
    if not path.startswith(_TARGETS):
        return None
    parts = path[len(_TARGETS) :].split("/")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def by_device(shipments: Iterable[Logged]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    for s in shipments:
        kind = kind_of(s.path)
        if kind in KINDS:
            totals.setdefault(s.device, dict.fromkeys(KINDS, 0))[kind] += s.bytes
    return totals


def to_json(s: Logged) -> dict[str, Any]:
    return {
        "device": s.device,
        "path": s.path,
        "kind": kind_of(s.path),
        "bytes": s.bytes,
        "version": version_of(s.path),
    }
