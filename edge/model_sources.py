"""Where a new model's bytes come from, tried in order: patch, compressed, full.

Each source answers one question: "the model bytes for this manifest, or why
not". It returns None when it has nothing to offer (no patch for the installed
model, no compressed file this agent can decode), raises when what it offers
turns out unusable, and otherwise returns bytes that the updater still checks
against the manifest's size and SHA-256, in one place, whichever source they
came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge.download import ArtifactFetcher
from edge.store import Installed
from edgeloop.contract import FULL_ENCODINGS, Manifest, SizeMismatch, Step, check_blob
from edgeloop.delta import PatchSpec, apply_checked, decompress_full

Progress = Callable[[Step, str], None]  # step, detail


def staged(staging: Path, sha256: str) -> Path:
    """A download's staging file, named by the SHA-256 it must have.

    A partial file is only ever resumed into the file it was part of: a v2 left
    by a killed agent is never continued with v3's bytes.
    """
    return staging / f"{sha256}.part"


class ModelSource(Protocol):
    @property
    def what(self) -> str:
        """Names the source in status details: "patch unusable (...)"."""
        ...

    def obtain(
        self, manifest: Manifest, installed: Installed | None, progress: Progress
    ) -> bytes | None:
        """The model's bytes (unchecked), None when this source has nothing for
        `manifest`, or an UpdateError or ContractError saying why they cannot be had."""
        ...


@dataclass(frozen=True)
class PatchSource:
    """A patch from the installed model: the smallest download when the cloud made one."""

    fetcher: ArtifactFetcher
    staging: Path
    max_bytes: int
    what: str = "patch"

    def obtain(
        self, manifest: Manifest, installed: Installed | None, progress: Progress
    ) -> bytes | None:
        delta = manifest.delta_from(installed.manifest.artifact.sha256) if installed else None
        if installed is None or delta is None:
            return None
        _within_cap(f"patch {delta.path}", delta.size, self.max_bytes)
        progress(Step.DOWNLOADING, f"{delta.codec} patch from v{delta.from_version}")
        patch = self.fetcher.fetch(delta.path, staged(self.staging, delta.sha256), delta.size)
        check_blob(patch, size=delta.size, sha256=delta.sha256, what=f"patch {delta.path}")
        progress(Step.PATCHING, "")
        return apply_checked(
            installed.model,
            patch,
            PatchSpec(
                delta.codec, delta.from_sha256, manifest.artifact.sha256, manifest.artifact.size
            ),
        )


@dataclass(frozen=True)
class CompressedSource:
    """The full model from its compressed file, when there is one this agent decodes."""

    fetcher: ArtifactFetcher
    staging: Path
    max_bytes: int
    what: str = "compressed artifact"

    def obtain(
        self, manifest: Manifest, installed: Installed | None, progress: Progress
    ) -> bytes | None:
        compressed = manifest.artifact.compressed
        if (
            compressed is None
            or compressed.encoding not in FULL_ENCODINGS
            or compressed.size >= manifest.artifact.size
        ):
            return None
        _within_cap(f"compressed artifact {compressed.path}", compressed.size, self.max_bytes)
        progress(Step.DOWNLOADING, f"full artifact ({compressed.encoding})")
        packed = self.fetcher.fetch(
            compressed.path, staged(self.staging, compressed.sha256), compressed.size
        )
        check_blob(
            packed,
            size=compressed.size,
            sha256=compressed.sha256,
            what=f"compressed artifact {compressed.path}",
        )
        # Capped at the declared size: a hostile frame cannot make the device allocate more.
        return decompress_full(packed, max_size=manifest.artifact.size)


@dataclass(frozen=True)
class FullSource:
    """The uncompressed artifact: always offered, so it comes last."""

    fetcher: ArtifactFetcher
    staging: Path
    what: str = "full artifact"

    def obtain(
        self, manifest: Manifest, installed: Installed | None, progress: Progress
    ) -> bytes | None:
        progress(Step.DOWNLOADING, "full artifact")
        return self.fetcher.fetch(
            manifest.artifact.path,
            staged(self.staging, manifest.artifact.sha256),
            manifest.artifact.size,
        )


def model_sources(
    fetcher: ArtifactFetcher, staging: Path, max_bytes: int = 64 * 1024 * 1024
) -> list[ModelSource]:
    """The device's order: fewest bytes first. No download may exceed `max_bytes`."""
    return [
        PatchSource(fetcher, staging, max_bytes),
        CompressedSource(fetcher, staging, max_bytes),
        FullSource(fetcher, staging),  # the updater caps the artifact itself
    ]


def _within_cap(what: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise SizeMismatch(
            f"{what} is declared {size} bytes, over this device's {max_bytes}-byte cap; "
            "it is not downloaded"
        )
