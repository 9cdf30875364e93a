"""Where a new model's bytes come from, tried in order: kept, patch, compressed, full.

Each is a target of the fleet's TUF repository, downloaded through it, so
ngclient checks its signed length and hashes before a byte is used. Each
source answers one question: "the model bytes for this update, or why not".
It returns None when it has nothing to offer (no patch from the installed
model, no compressed file this agent can decode), raises when what it offers
turns out unusable, and otherwise returns bytes that the updater still checks
against the model target's size and SHA-256, in one place, whichever source
they came from: a patched result is only as good as that check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from edge.store import Installed
from edge.targets import Offer, SignedTarget
from edgeloop.contract import FULL_ENCODINGS, Manifest, SizeMismatch, Step

Progress = Callable[[Step, str], None]  # step, detail


@dataclass(frozen=True)
class Update:
    """A version the pointer names for this device: as it will be kept, and its targets."""

    manifest: Manifest
    offer: Offer


class TargetDownloads(Protocol):
    def download(self, target: SignedTarget, keep: bool = False) -> bytes:
        """The target's bytes, verified against its signed length and hashes."""
        ...


class ModelSource(Protocol):
    @property
    def what(self) -> str:
        """Names the source in status details: "patch unusable (...)"."""
        ...

    def obtain(
        self, update: Update, installed: Installed | None, progress: Progress
    ) -> bytes | None:
        """The model's bytes (unchecked), None when this source has nothing for
        `update`, or an UpdateError or ContractError saying why they cannot be had."""
        ...


@dataclass(frozen=True)
class KeptSource:
    """A model this device still keeps (the one it replaced): going back to it after an
    abort downloads nothing. Used only when its bytes have the signed hash."""

    held: Callable[[], Iterable[Installed | None]]
    what: str = "kept model"

    def obtain(
        self, update: Update, installed: Installed | None, progress: Progress
    ) -> bytes | None:
        wanted = update.manifest.artifact.sha256
        for kept in self.held():
            if kept is not None and hashlib.sha256(kept.model).hexdigest() == wanted:
                progress(Step.DOWNLOADING, f"kept v{kept.version}'s bytes: nothing to fetch")
                return kept.model
        return None


@dataclass(frozen=True)
class PatchSource:
    """A patch from the installed model: the smallest download when the cloud made one."""

    repository: TargetDownloads
    max_bytes: int
    what: str = "patch"

    def obtain(
        self, update: Update, installed: Installed | None, progress: Progress
    ) -> bytes | None:
        offered = update.offer.patch
        if installed is None or offered is None:
            return None
        target, info = offered
        manifest = update.manifest
        if info.base_sha256 != installed.manifest.artifact.sha256:
            return None  # made for another base: never fetched
        _within_cap(f"patch {target.path}", target.length, self.max_bytes)
        progress(Step.DOWNLOADING, f"{info.codec} patch from v{info.base_version}")
        patch = self.repository.download(target)
        progress(Step.PATCHING, "")
        # Imported here: the codecs (bsdiff4, zstandard) serve an update a month, not the
        # agent's every hour.
        from edgeloop.delta import PatchSpec, apply_checked

        return apply_checked(
            installed.model,
            patch,
            PatchSpec(
                info.codec, info.base_sha256, manifest.artifact.sha256, manifest.artifact.size
            ),
        )


@dataclass(frozen=True)
class CompressedSource:
    """The full model from its compressed file, when there is one this agent decodes."""

    repository: TargetDownloads
    max_bytes: int
    what: str = "compressed artifact"

    def obtain(
        self, update: Update, installed: Installed | None, progress: Progress
    ) -> bytes | None:
        artifact = update.manifest.artifact
        for encoding in FULL_ENCODINGS:
            target = update.offer.compressed.get(encoding)
            if target is None or target.length >= artifact.size:
                continue
            _within_cap(f"compressed artifact {target.path}", target.length, self.max_bytes)
            progress(Step.DOWNLOADING, f"full artifact ({encoding})")
            packed = self.repository.download(target)
            from edgeloop.delta import decompress_full  # as in PatchSource: a rare path

            # Capped at the model's size: a hostile frame cannot make the device allocate more.
            return decompress_full(packed, max_size=artifact.size)
        return None


@dataclass(frozen=True)
class FullSource:
    """The uncompressed model target: always offered, so it comes last."""

    repository: TargetDownloads
    what: str = "full artifact"

    def obtain(
        self, update: Update, installed: Installed | None, progress: Progress
    ) -> bytes | None:
        target = update.offer.model
        if target is None:
            return None
        progress(Step.DOWNLOADING, "full artifact")
        return self.repository.download(target)


def model_sources(
    repository: TargetDownloads,
    max_bytes: int = 64 * 1024 * 1024,
    held: Callable[[], Iterable[Installed | None]] | None = None,
) -> list[ModelSource]:
    """The device's order: fewest bytes first (what it `held` first: none). No download
    may exceed `max_bytes`."""
    kept: list[ModelSource] = [] if held is None else [KeptSource(held)]
    return [
        *kept,
        PatchSource(repository, max_bytes),
        CompressedSource(repository, max_bytes),
        FullSource(repository),  # the updater caps the model itself
    ]


def _within_cap(what: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise SizeMismatch(
            f"{what} is declared {size} bytes, over this device's {max_bytes}-byte cap; "
            "it is not downloaded"
        )
