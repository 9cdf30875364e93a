"""Model sources tried in order, against a simulated repository (no network)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from tuf.api.metadata import TargetFile

from edge.model_sources import (
    CompressedSource,
    FullSource,
    PatchSource,
    Progress,
    Update,
    model_sources,
)
from edge.store import Installed
from edge.targets import Offer, SignedTarget
from edgeloop.contract import (
    ArtifactRef,
    ContractError,
    Manifest,
    Step,
    TensorSpec,
    sha256_hex,
)
from edgeloop.contract.trust_targets import PatchInfo
from edgeloop.delta import compress_full, make_patch

OLD = bytes(range(256)) * 64
NEW = OLD[:4000] + b"retrained" * 50 + OLD[4450:]


@dataclass
class SimulatedRepository:
    """What the repository holds, target by target; downloads are recorded. It hands
    back whatever it holds, so the sources' own checks are what the tests see."""

    files: dict[str, bytes] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)

    def add(self, path: str, data: bytes) -> TargetFile:
        self.files[path] = data
        return TargetFile.from_data(path, data, ["sha256"])

    def download(self, target: SignedTarget, keep: bool = False) -> bytes:
        self.fetched.append(target.path)
        return self.files[target.path]


def _manifest(version: int, data: bytes) -> Manifest:
    return Manifest.new(
        model="vibration",
        version=version,
        input=TensorSpec(shape=(-1, 8)),
        output=TensorSpec(shape=(-1,)),
        artifact=ArtifactRef(f"vibration/{version}/model.tflite", sha256_hex(data), len(data)),
    )


def update(repo: SimulatedRepository, *, patch: bool, compressed: bool) -> Update:
    full = repo.add("vibration/2/model.tflite", NEW)
    packed = repo.add("vibration/2/model.tflite.zstd", compress_full(NEW))
    diff = repo.add("vibration/2/from-1.bsdiff4", make_patch(OLD, NEW, "bsdiff4"))
    info = PatchInfo("bsdiff4", 1, sha256_hex(OLD), full.path)
    offer = Offer(
        "vibration",
        2,
        None,
        model=full,
        compressed={"zstd": packed} if compressed else {},
        patch=(diff, info) if patch else None,
    )
    return Update(_manifest(2, NEW), offer)


def installed_v1() -> Installed:
    return Installed(1, OLD, _manifest(1, OLD), b"{}")


def steps() -> tuple[list[tuple[Step, str]], Progress]:
    seen: list[tuple[Step, str]] = []
    return seen, lambda step, detail: seen.append((step, detail))


def test_a_source_with_nothing_to_offer_says_none_without_fetching() -> None:
    repo = SimulatedRepository()
    u = update(repo, patch=False, compressed=False)
    seen, progress = steps()
    assert PatchSource(repo, 1 << 20).obtain(u, installed_v1(), progress) is None
    assert CompressedSource(repo, 1 << 20).obtain(u, None, progress) is None
    assert repo.fetched == []
    assert seen == []


def test_each_source_yields_the_model_it_offers() -> None:
    repo = SimulatedRepository()
    u = update(repo, patch=True, compressed=True)
    for source in model_sources(repo):
        seen, progress = steps()
        assert source.obtain(u, installed_v1(), progress) == NEW
        assert seen[0][0] is Step.DOWNLOADING
    assert repo.fetched == [
        "vibration/2/from-1.bsdiff4",
        "vibration/2/model.tflite.zstd",
        "vibration/2/model.tflite",
    ]


def test_a_patch_for_another_base_is_never_fetched() -> None:
    repo = SimulatedRepository()
    u = update(repo, patch=True, compressed=False)
    other = Installed(1, b"other", _manifest(1, b"other"), b"{}")
    _, progress = steps()
    assert PatchSource(repo, 1 << 20).obtain(u, other, progress) is None
    assert repo.fetched == []


def test_a_patch_that_does_not_make_the_model_says_why() -> None:
    """The patched result is checked against the model target's hash, whatever signed it."""
    repo = SimulatedRepository()
    u = update(repo, patch=True, compressed=False)
    repo.files["vibration/2/from-1.bsdiff4"] = make_patch(OLD, NEW[:-1] + b"!", "bsdiff4")
    _, progress = steps()
    with pytest.raises(ContractError, match="patched"):
        PatchSource(repo, 1 << 20).obtain(u, installed_v1(), progress)


def test_the_full_artifact_is_always_offered() -> None:
    repo = SimulatedRepository()
    u = update(repo, patch=False, compressed=False)
    seen, progress = steps()
    assert FullSource(repo).obtain(u, None, progress) == NEW
    assert seen == [(Step.DOWNLOADING, "full artifact")]
