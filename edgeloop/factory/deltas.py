"""The delta planner: for each model a device may hold, the smallest patch worth shipping."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgeloop.contract import CODECS, sha256_hex
from edgeloop.delta import LayoutChanged, PatchSpec, apply_checked, compress_full, make_patch

# bsdiff's suffix sort grows faster than the model: `make bench` measured 29 s
# and 244 MB to diff two 16 MB models, against 10 s for zstd and 5 s for wdiff,
# with patches no smaller (bench/results/patchgen.json). Above this size it is
# left out.
BSDIFF_MAX_BYTES = 4 * 2**20


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
    compressed_full: bytes
    patches: tuple[PlannedPatch, ...]
    dropped: tuple[tuple[int, str], ...]

    @property
    def compressed_full_size(self) -> int:
        return len(self.compressed_full)

    def shipped_bytes(self, installed_version: int | None) -> int:
        """What a device holding `installed_version` fetches: its patch, else the
        compressed full artifact (a device never fetches more than that)."""
        sizes = [p.size for p in self.patches if p.from_version == installed_version]
        return min([self.compressed_full_size, *sizes])


def plan_deltas(
    new: bytes, bases: Mapping[int, bytes], codecs: Sequence[str] = CODECS
) -> DeltaPlan:
    """Make every codec's patch from every base and keep the smallest per base.

    A patch is kept only if it is smaller than the zstd-compressed full
    artifact: otherwise fetching the full model costs no more and is simpler.
    Every kept patch is applied once here, so a codec bug can never ship.
    bsdiff4 is not tried on models above BSDIFF_MAX_BYTES.
    """
    target = sha256_hex(new)
    compressed = compress_full(new)
    yardstick = len(compressed)
    patches: list[PlannedPatch] = []
    dropped: list[tuple[int, str]] = []
    for version in sorted(bases):
        old = bases[version]
        base_sha = sha256_hex(old)
        if base_sha == target:
            dropped.append((version, "identical to the new model"))
            continue
        candidates = []
        for codec in codecs:
            if codec == "bsdiff4" and max(len(old), len(new)) > BSDIFF_MAX_BYTES:
                continue
            try:
                candidates.append(
                    PlannedPatch(version, base_sha, codec, make_patch(old, new, codec))
                )
            except LayoutChanged:
                continue  # a retrain that changed tensor shapes; the other codecs still apply
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
    return DeltaPlan(target, len(new), compressed, tuple(patches), tuple(dropped))
