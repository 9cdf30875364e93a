"""What the CDN sent each device, named for what it is.

The CDN stand-in logs every response by path. A version directory holds
three kinds of file, and the demo reports them apart: the full model
(`model.tflite`), the zstd-compressed full model (`model.tflite.zst`, what a
device without a usable patch fetches) and patches (`from-{version}.{codec}`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

KINDS = ("patch", "compressed", "full")
LABELS = {
    "patch": "patches",
    "compressed": "compressed full model (.zst)",
    "full": "full model (.tflite)",
}


class Logged(Protocol):
    device: str
    path: str
    bytes: int


def kind_of(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    if name == "model.tflite":
        return "full"
    if name == "model.tflite.zst":
        return "compressed"
    if name.startswith("from-"):
        return "patch"
    return "other"


def version_of(path: str) -> int:
    return int(path.split("/")[2])


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
