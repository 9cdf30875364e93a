"""The update state machine: one update at a time, every step reported.

    received → verified → downloading → patching → checking → swapped → persisted → succeeded
                  any refusal or failure → failed, and the old model keeps serving

`handle` reads as that sequence: verify, obtain, check, stage, swap, commit.
Each step is a small method; each failure is one UpdateError (edge.errors)
whose reason goes into the status report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from edge.binding import check_binding, device_now
from edge.errors import (
    DownloadFailed,
    HealthCheckFailed,
    ManifestRefused,
    ModelCrashed,
    ModelTooSlow,
    ModelUnusable,
    RefusedBefore,
    RetryableUpdateError,
    StagingFailed,
    Unchecked,
    UpdateError,
    UpdateRefused,
)
from edge.model_sources import ModelSource
from edge.probe import ChildProcessProbe, ProbeVerdict
from edge.scoring import LoadedModel, Scorer, run_health_checks
from edge.store import Installed, ModelStore
from edgeloop.contract import (
    ContractError,
    Manifest,
    SizeMismatch,
    Step,
    TensorSpec,
    TrustedKeys,
    VersionNotNewer,
    accept_manifest,
    check_blob,
    utc_now,
)
from edgeloop.runtime import CompiledModel, ModelLoadError

Report = Callable[[Step, int | None, str], None]  # step, target version, detail

# The time a model may take to load and pass its checks in the child process.
DEFAULT_CHECK_SECONDS = 10.0


@dataclass(frozen=True)
class UpdateResult:
    step: Step  # succeeded | failed | already_installed
    version: int | None
    detail: str
    error: UpdateError | None = None

    @property
    def retryable(self) -> bool:
        """The CDN or the disk failed, not the release: the same announcement may succeed later.

        A retained announcement arrives once per subscription, so the agent retries it itself.
        """
        return isinstance(self.error, RetryableUpdateError)


class Updater:
    def __init__(
        self,
        model: str,
        store: ModelStore,
        scorer: Scorer,
        trusted: TrustedKeys,
        sources: Sequence[ModelSource],
        device_input: TensorSpec,
        report: Report,
        max_bytes: int,
        on_swapped: Callable[[LoadedModel, LoadedModel | None], None] | None = None,
        probe: ModelProbe | None = None,
    ) -> None:
        if not sources:
            raise ValueError("an updater needs at least one model source")
        self.model = model  # the only model whose manifests this device installs
        self.store = store
        self.scorer = scorer
        self.trusted = trusted
        self.sources = tuple(sources)
        self.device_input = device_input
        self.report = report
        self.max_bytes = max_bytes
        self.on_swapped = on_swapped
        self.probe: ModelProbe = probe or ChildProcessProbe(timeout=DEFAULT_CHECK_SECONDS)

    def handle(self, raw: bytes, now: datetime | None = None) -> UpdateResult:
        self.report(Step.RECEIVED, None, "")
        current = self.scorer.model
        installed = current.version if current is not None else None
        try:
            manifest = self._verify(raw, installed, now)
        except UpdateError as exc:
            if isinstance(exc.cause, VersionNotNewer) and exc.version == installed:
                self.report(Step.ALREADY_INSTALLED, exc.version, f"v{installed} is already running")
                return UpdateResult(Step.ALREADY_INSTALLED, exc.version, str(exc))
            return self._failed(exc.version, exc)
        self.report(Step.VERIFIED, manifest.version, "")
        try:
            model_bytes = self._obtain(manifest, current)
            loaded = self._check(manifest, model_bytes)
            self._stage(manifest, model_bytes, raw)
        except UpdateError as exc:
            return self._failed(manifest.version, exc)
        finally:
            self.store.clear_staging()
        previous = self.scorer.swap(loaded)
        self.report(Step.SWAPPED, manifest.version, "")
        self.store.commit(manifest.version, trusted_created_at=manifest.created)
        self.report(Step.PERSISTED, manifest.version, "")
        if self.on_swapped is not None:
            # After the commit: a rollback by the watch must find the new version
            # committed, or it would restore the one before the previous.
            self.on_swapped(loaded, previous)
        detail = f"running v{manifest.version}"
        self.report(Step.SUCCEEDED, manifest.version, detail)
        return UpdateResult(Step.SUCCEEDED, manifest.version, detail)

    def _failed(self, version: int | None, error: UpdateError) -> UpdateResult:
        self.report(Step.FAILED, version, error.reason)
        return UpdateResult(Step.FAILED, version, error.reason, error)

    # --- the steps ---------------------------------------------------------------------

    def _verify(self, raw: bytes, installed: int | None, clock: datetime | None) -> Manifest:
        now = device_now(clock or utc_now(), self.store.state.clock_floor)
        try:
            manifest = accept_manifest(
                raw,
                self.trusted,
                installed_version=installed,
                device_input=self.device_input,
                now=now,
            )
        except VersionNotNewer as exc:
            parsed = self.trusted.verify(raw)  # signature already held, so this cannot fail
            check_binding(parsed, self.model, now)  # another model's v1 is not "installed"
            raise ManifestRefused(str(exc), exc, version=parsed.version) from exc
        except ContractError as exc:
            raise _contract_refusal(exc) from exc
        check_binding(manifest, self.model, now)
        if not manifest.health_checks:  # refused before a byte is downloaded
            raise Unchecked(
                f"manifest for {manifest.model} v{manifest.version} has no health checks; "
                "the device only installs a model it can try before serving it",
                version=manifest.version,
            )
        if manifest.version in self.store.state.refused:
            raise RefusedBefore(
                f"v{manifest.version} failed on this device before; waiting for a newer version",
                version=manifest.version,
            )
        return manifest

    def _obtain(self, manifest: Manifest, current: LoadedModel | None) -> bytes:
        """The first model source that yields bytes matching the manifest wins."""
        if manifest.artifact.size > self.max_bytes:
            raise _contract_refusal(
                SizeMismatch(
                    f"model is {manifest.artifact.size} bytes, "
                    f"over this device's {self.max_bytes}-byte cap"
                )
            )
        installed = self.store.current() if current is not None else None
        version = manifest.version
        offering = self.sources
        for i, source in enumerate(offering):
            try:
                data = self._from(source, manifest, installed)
            except (ManifestRefused, DownloadFailed) as exc:
                if i == len(offering) - 1:
                    raise
                # Anything wrong with a smaller source falls back to the next one.
                self.report(
                    Step.DOWNLOADING,
                    version,
                    f"{source.what} unusable ({exc.reason}); fetching the {offering[i + 1].what}",
                )
                continue
            if data is not None:
                return data
        raise DownloadFailed(f"no model source offered v{version}")  # the last always offers

    def _from(
        self, source: ModelSource, manifest: Manifest, installed: Installed | None
    ) -> bytes | None:
        def progress(step: Step, detail: str) -> None:
            self.report(step, manifest.version, detail)

        try:
            data = source.obtain(manifest, installed, progress)
            if data is not None:
                check_blob(
                    data,
                    size=manifest.artifact.size,
                    sha256=manifest.artifact.sha256,
                    what=f"artifact {manifest.artifact.path} (from the {source.what})",
                )
        except ContractError as exc:
            raise _contract_refusal(exc) from exc
        except OSError as exc:
            # A full or read-only disk while downloading: nothing was swapped.
            raise StagingFailed(f"cannot stage v{manifest.version}: {exc}") from exc
        return data

    def _check(self, manifest: Manifest, model_bytes: bytes) -> LoadedModel:
        """Try the model in a child process first; only then load it here."""
        self.report(Step.CHECKING, manifest.version, "")
        n_features = self.device_input.shape[-1]
        self.store.attempt(manifest.version)
        try:
            verdict = self.probe.check(
                model_bytes, n_features, [h.to_json() for h in manifest.health_checks]
            )
            if not verdict.passed:
                raise probe_refusal(verdict.reason)
            try:
                runtime = CompiledModel(model_bytes)
            except ModelLoadError as exc:
                raise ModelUnusable(str(exc), exc) from exc
            if runtime.n_features != n_features:
                raise ModelUnusable(
                    f"model takes {runtime.n_features} features, this device produces {n_features}"
                )
            run_health_checks(runtime, manifest.health_checks)
        except Exception:
            self.store.attempt_over()  # refused, not crashed: the marker goes
            raise
        self.store.attempt_over()
        return LoadedModel(manifest, runtime)

    def _stage(self, manifest: Manifest, model_bytes: bytes, raw: bytes) -> None:
        try:
            self.store.stage(manifest.version, model_bytes, raw)
        except OSError as exc:
            raise StagingFailed(
                f"cannot write v{manifest.version} to {self.store.versions}: {exc.strerror}"
            ) from exc


class ModelProbe(Protocol):
    def check(self, model: bytes, n_features: int, checks: list[dict[str, Any]]) -> ProbeVerdict:
        """Load `model` and run `checks` somewhere a crash cannot reach the agent."""
        ...


_PROBE_REFUSALS: dict[str, type[UpdateRefused]] = {
    "HealthCheckFailed": HealthCheckFailed,
    "ModelCrashed": ModelCrashed,
    "ModelTooSlow": ModelTooSlow,
}


def probe_refusal(reason: str) -> UpdateRefused:
    """The child's "Kind: message" as the agent's own typed refusal."""
    kind, _, message = reason.partition(": ")
    if kind == "ModelLoadError":
        return ModelUnusable(message, ModelLoadError(message))
    return _PROBE_REFUSALS.get(kind, ModelUnusable)(message or reason)


def _contract_refusal(exc: ContractError) -> ManifestRefused:
    return ManifestRefused(str(exc), exc)
