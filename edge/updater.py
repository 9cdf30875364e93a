"""The update state machine: one update at a time, every step reported.

    received → verified → downloading → patching → checking → swapped → persisted → succeeded
                  any refusal or failure → failed, and the old model keeps serving

Each step is a small method; each failure is one typed exception whose message
goes into the status report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from edge.download import DownloadFailed, Fetcher
from edge.scoring import HealthCheckFailed, LoadedModel, Scorer, run_health_checks
from edge.store import ModelStore
from edgeloop.contract import (
    FULL_ENCODINGS,
    ContractError,
    HashMismatch,
    Manifest,
    PatchBaseMismatch,
    PatchCorrupt,
    SizeMismatch,
    TensorSpec,
    TrustedKeys,
    VersionNotNewer,
    accept_manifest,
    check_blob,
)
from edgeloop.delta import PatchSpec, apply_checked, decompress_full
from edgeloop.runtime import CompiledModel, ModelLoadError

Report = Callable[[str, int | None, str], None]  # step, target version, detail


class StagingFailed(Exception):
    """The new version could not be written to disk (disk full, read-only); nothing was swapped."""


class UpdateAbandoned(Exception):
    """Raised by a test hook to stop an update at a given step, as a power cut would."""


# Everything an update may fail with; the old model keeps serving in every case.
UPDATE_ERRORS = (ContractError, DownloadFailed, ModelLoadError, HealthCheckFailed, StagingFailed)


@dataclass(frozen=True)
class UpdateResult:
    step: str  # succeeded | failed | already_installed
    version: int | None
    detail: str
    # The CDN or the disk failed, not the manifest or the model: the same
    # announcement may succeed later. A retained announcement arrives once per
    # subscription, so the agent retries it itself.
    retryable: bool = False


class Updater:
    def __init__(
        self,
        store: ModelStore,
        scorer: Scorer,
        trusted: TrustedKeys,
        fetcher: Fetcher,
        device_input: TensorSpec,
        report: Report,
        max_bytes: int,
        on_swapped: Callable[[LoadedModel, LoadedModel | None], None] | None = None,
        crash_at: str | None = None,
    ) -> None:
        self.store = store
        self.scorer = scorer
        self.trusted = trusted
        self.fetcher = fetcher
        self.device_input = device_input
        self.report = report
        self.max_bytes = max_bytes
        self.on_swapped = on_swapped
        self._crash_at = crash_at

    def _step(self, step: str, version: int | None, detail: str = "") -> None:
        if step == self._crash_at:
            raise UpdateAbandoned(f"stopped at {step}")
        self.report(step, version, detail)

    def handle(self, raw: bytes, now: datetime | None = None) -> UpdateResult:
        self._step("received", None)
        current = self.scorer.model
        installed = current.version if current is not None else None
        try:
            manifest = accept_manifest(
                raw,
                self.trusted,
                installed_version=installed,
                device_input=self.device_input,
                now=now or datetime.now(UTC),
            )
        except VersionNotNewer as exc:
            parsed = self.trusted.verify(raw)  # signature already held, so this cannot fail
            if parsed.version == installed:
                self.report("already_installed", parsed.version, f"v{installed} is already running")
                return UpdateResult("already_installed", parsed.version, str(exc))
            return self._failed(parsed.version, exc)
        except ContractError as exc:
            return self._failed(None, exc)
        if manifest.version in self.store.state.refused:
            detail = (
                f"v{manifest.version} failed on this device before; waiting for a newer version"
            )
            self.report("failed", manifest.version, detail)
            return UpdateResult("failed", manifest.version, detail)
        self._step("verified", manifest.version)
        try:
            model_bytes = self._obtain(manifest, current)
            loaded = self._check(manifest, model_bytes)
            self._stage(manifest, model_bytes, raw)
        except UPDATE_ERRORS as exc:
            return self._failed(manifest.version, exc)
        except OSError as exc:
            # A full or read-only disk while downloading: nothing was swapped.
            staged = StagingFailed(f"cannot stage v{manifest.version}: {exc}")
            return self._failed(manifest.version, staged)
        finally:
            self.store.clear_staging()
        previous = self.scorer.swap(loaded)
        self._step("swapped", manifest.version)
        self.store.commit(manifest.version)
        self._step("persisted", manifest.version)
        if self.on_swapped is not None:
            self.on_swapped(loaded, previous)
        self.report("succeeded", manifest.version, f"running v{manifest.version}")
        return UpdateResult("succeeded", manifest.version, f"running v{manifest.version}")

    def _failed(self, version: int | None, exc: BaseException) -> UpdateResult:
        detail = f"{type(exc).__name__}: {exc}"
        self.report("failed", version, detail)
        return UpdateResult(
            "failed", version, detail, isinstance(exc, DownloadFailed | StagingFailed)
        )

    def _obtain(self, manifest: Manifest, current: LoadedModel | None) -> bytes:
        """A patch against the installed model when one fits, else the full artifact."""
        if manifest.artifact.size > self.max_bytes:
            raise SizeMismatch(
                f"model is {manifest.artifact.size} bytes, "
                f"over this device's {self.max_bytes}-byte cap"
            )
        installed = self.store.current() if current is not None else None
        delta = manifest.delta_from(installed.manifest.artifact.sha256) if installed else None
        if installed is not None and delta is not None:
            self._step(
                "downloading", manifest.version, f"{delta.codec} patch from v{delta.from_version}"
            )
            try:
                patch = self.fetcher.fetch(delta.path, self.store.staging / "patch", delta.size)
                check_blob(patch, size=delta.size, sha256=delta.sha256, what=f"patch {delta.path}")
                self._step("patching", manifest.version)
                return apply_checked(
                    installed.model,
                    patch,
                    PatchSpec(
                        delta.codec,
                        delta.from_sha256,
                        manifest.artifact.sha256,
                        manifest.artifact.size,
                    ),
                )
            except (
                PatchBaseMismatch,
                PatchCorrupt,
                HashMismatch,
                SizeMismatch,
                DownloadFailed,
            ) as exc:
                # The full artifact is the fallback for anything wrong with a patch.
                self.report(
                    "downloading",
                    manifest.version,
                    f"patch unusable ({exc}); fetching the full model",
                )
        data, source = self._compressed_artifact(manifest), "decompressed"
        if data is None:
            self._step("downloading", manifest.version, "full artifact")
            data, source = (
                self.fetcher.fetch(
                    manifest.artifact.path,
                    self.store.staging / "model.tflite",
                    manifest.artifact.size,
                ),
                "uncompressed",
            )
        check_blob(
            data,
            size=manifest.artifact.size,
            sha256=manifest.artifact.sha256,
            what=f"artifact {manifest.artifact.path} ({source})",
        )
        return data

    def _compressed_artifact(self, manifest: Manifest) -> bytes | None:
        """The full model from its compressed file, or None to fetch it uncompressed.

        None when the manifest names no compressed file this agent can decode (or
        one no smaller), and when the file is unusable; the caller checks the
        result against the artifact's size and hash like any other source.
        """
        compressed = manifest.artifact.compressed
        if (
            compressed is None
            or compressed.encoding not in FULL_ENCODINGS
            or compressed.size >= manifest.artifact.size
        ):
            return None
        self._step("downloading", manifest.version, f"full artifact ({compressed.encoding})")
        try:
            packed = self.fetcher.fetch(
                compressed.path, self.store.staging / "model.tflite.zst", compressed.size
            )
            check_blob(
                packed,
                size=compressed.size,
                sha256=compressed.sha256,
                what=f"compressed artifact {compressed.path}",
            )
            return decompress_full(packed, max_size=manifest.artifact.size)
        except (PatchCorrupt, HashMismatch, SizeMismatch, DownloadFailed) as exc:
            self.report(
                "downloading",
                manifest.version,
                f"compressed artifact unusable ({exc}); fetching it uncompressed",
            )
            return None

    def _check(self, manifest: Manifest, model_bytes: bytes) -> LoadedModel:
        self._step("checking", manifest.version)
        runtime = CompiledModel(model_bytes)
        if runtime.n_features != self.device_input.shape[-1]:
            raise ModelLoadError(
                f"model takes {runtime.n_features} features, "
                f"this device produces {self.device_input.shape[-1]}"
            )
        run_health_checks(runtime, manifest.health_checks)
        return LoadedModel(manifest, runtime)

    def _stage(self, manifest: Manifest, model_bytes: bytes, raw: bytes) -> None:
        try:
            self.store.stage(manifest.version, model_bytes, raw)
        except OSError as exc:
            raise StagingFailed(
                f"cannot write v{manifest.version} to {self.store.versions}: {exc.strerror}"
            ) from exc
