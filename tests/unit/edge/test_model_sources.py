"""Model sources tried in order, against a simulated repository (no network)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import pytest

from edge.errors import DownloadFailed
from edge.model_sources import (
    CompressedSource,
    FullSource,
    PatchSource,
    Progress,
    model_sources,
)
from edge.store import Installed
from edgeloop.contract import (
    ArtifactRef,
    CompressedRef,
    DeltaRef,
    HashMismatch,
    Manifest,
    Step,
    TensorSpec,
    sha256_hex,
)
from edgeloop.delta import compress_full, make_patch

OLD = bytes(range(256)) * 64
NEW = OLD[:4000] + b"retrained" * 50 + OLD[4450:]


@dataclass
class SimulatedRepository:
    """What the CDN holds, path by path; fetches are recorded."""

    files: dict[str, bytes] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)

    def fetch(self, path: str, dest: Path, size: int) -> bytes:
        self.fetched.append(path)
        if path not in self.files:
            raise DownloadFailed(f"{path}: 404")
        return self.files[path]


def manifest(repo: SimulatedRepository, *, patch: bool, compressed: bool) -> Manifest:
    repo.files["m/2/model.tflite"] = NEW
    packed = compress_full(NEW)
    repo.files["m/2/model.tflite.zst"] = packed
    diff = make_patch(OLD, NEW, "bsdiff4")
    repo.files["m/2/from-1.bsdiff4"] = diff
    return Manifest.new(
        model="vibration",
        version=2,
        input=TensorSpec(shape=(-1, 8)),
        output=TensorSpec(shape=(-1,)),
        artifact=ArtifactRef(
            "m/2/model.tflite",
            sha256_hex(NEW),
            len(NEW),
            CompressedRef("zstd", "m/2/model.tflite.zst", sha256_hex(packed), len(packed))
            if compressed
            else None,
        ),
        deltas=(
            DeltaRef(
                1, sha256_hex(OLD), "bsdiff4", "m/2/from-1.bsdiff4", sha256_hex(diff), len(diff)
            ),
        )
        if patch
        else (),
        valid_for=timedelta(days=1),
    )


def installed_v1() -> Installed:
    base = Manifest.new(
        model="vibration",
        version=1,
        input=TensorSpec(shape=(-1, 8)),
        output=TensorSpec(shape=(-1,)),
        artifact=ArtifactRef("m/1/model.tflite", sha256_hex(OLD), len(OLD)),
        valid_for=timedelta(days=1),
    )
    return Installed(1, OLD, base, b"{}")


def steps() -> tuple[list[tuple[Step, str]], Progress]:
    seen: list[tuple[Step, str]] = []
    return seen, lambda step, detail: seen.append((step, detail))


def test_a_source_with_nothing_to_offer_says_none_without_fetching(tmp_path: Path) -> None:
    repo = SimulatedRepository()
    m = manifest(repo, patch=False, compressed=False)
    seen, progress = steps()
    assert PatchSource(repo, tmp_path, 1 << 20).obtain(m, installed_v1(), progress) is None
    assert CompressedSource(repo, tmp_path, 1 << 20).obtain(m, None, progress) is None
    assert repo.fetched == []
    assert seen == []


def test_each_source_yields_the_model_it_offers(tmp_path: Path) -> None:
    repo = SimulatedRepository()
    m = manifest(repo, patch=True, compressed=True)
    for source in model_sources(repo, tmp_path):
        seen, progress = steps()
        assert source.obtain(m, installed_v1(), progress) == NEW
        assert seen[0][0] is Step.DOWNLOADING
    assert repo.fetched == ["m/2/from-1.bsdiff4", "m/2/model.tflite.zst", "m/2/model.tflite"]


def test_a_patch_whose_bytes_were_replaced_says_why(tmp_path: Path) -> None:
    repo = SimulatedRepository()
    m = manifest(repo, patch=True, compressed=False)
    repo.files["m/2/from-1.bsdiff4"] = b"X" + repo.files["m/2/from-1.bsdiff4"][1:]
    _, progress = steps()
    with pytest.raises(HashMismatch, match=r"patch m/2/from-1\.bsdiff4"):
        PatchSource(repo, tmp_path, 1 << 20).obtain(m, installed_v1(), progress)


def test_the_full_artifact_is_always_offered(tmp_path: Path) -> None:
    repo = SimulatedRepository()
    m = replace(manifest(repo, patch=False, compressed=False))
    seen, progress = steps()
    assert FullSource(repo, tmp_path).obtain(m, None, progress) == NEW
    assert seen == [(Step.DOWNLOADING, "full artifact")]
