"""The delta planner: for each model a device may hold, the smallest patch worth shipping."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgeloop.contract.manifest import CODECS, sha256_hex
from edgeloop.delta import PatchSpec, apply_checked, compress_full, make_patch


@dataclass(frozen=True)
class PlannedPatch:
    from_version: int
    from_sha256: str
    codec: str
    data: bytes

    @property
    def sha256(self) -> str:
        return sha256_hex(self.data)

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class DeltaPlan:
    """The patches to publish beside a new full artifact, and why others were left out."""

    target_sha256: str
    full_size: int
    compressed_full_size: int
    patches: tuple[PlannedPatch, ...]
    dropped: tuple[tuple[int, str], ...]


def plan_deltas(
    new: bytes, bases: Mapping[int, bytes], codecs: Sequence[str] = CODECS
) -> DeltaPlan:
    """Make every codec's patch from every base and keep the smallest per base.

    A patch is kept only if it is smaller than the zstd-compressed full
    artifact: otherwise fetching the full model costs no more and is simpler.
    Every kept patch is applied once here, so a codec bug can never ship.
    """
    target = sha256_hex(new)
    yardstick = len(compress_full(new))
    patches: list[PlannedPatch] = []
    dropped: list[tuple[int, str]] = []
    for version in sorted(bases):
        old = bases[version]
        base_sha = sha256_hex(old)
        if base_sha == target:
            dropped.append((version, "identical to the new model"))
            continue
        candidates = [PlannedPatch(version, base_sha, c, make_patch(old, new, c)) for c in codecs]
        best = min(candidates, key=lambda p: (p.size, codecs.index(p.codec)))
        if best.size >= yardstick:
            dropped.append(
                (
                    version,
                    f"best patch ({best.codec}, {best.size} B) is not smaller than the "
                    f"compressed full artifact ({yardstick} B)",
                )
            )
            continue
        apply_checked(old, best.data, PatchSpec(best.codec, base_sha, target, len(new)))
        patches.append(best)
    return DeltaPlan(target, len(new), yardstick, tuple(patches), tuple(dropped))
