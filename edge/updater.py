"""The update state machine: one update at a time, every step reported.

    received → verified → downloading → patching → checking → swapped → persisted → succeeded
                  any refusal or failure → failed, and the old model keeps serving

`handle` reads as that sequence: refresh, obtain, check, stage, swap, commit.
What starts an update is a nudge or the agent's timer, never what it says:
the refresh asks the fleet's TUF repository (edge.trust) what the signed
rollout pointer names for this thing, and whatever version that is (higher, or
lower after an abort) is fetched unless the installed model already has its
signed hash, from verified targets only. Each step is a
small method; each failure is one UpdateError (edge.errors) whose reason goes
into the status report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from edge.allocator import return_free_memory
from edge.binding import CLOCK_SKEW, check_binding
from edge.errors import (
    ClockBehind,
    DownloadFailed,
    HealthCheckFailed,
    ManifestRefused,
    ModelCrashed,
    ModelTooSlow,
    ModelUnusable,
    RefusedBefore,
    RetryableUpdateError,
    StagingFailed,
    TrustRefused,
    TrustUnavailable,
    Unchecked,
    UpdateError,
    UpdateRefused,
)
from edge.model_sources import ModelSource, Update
from edge.probe import ChildProcessProbe, ProbeVerdict
from edge.scoring import LoadedModel, Scorer, run_health_checks
from edge.store import Installed, ModelStore
from edge.targets import InstalledModel, Offer, Repository, sha256_of
from edgeloop.contract import (
    FULL_ENCODINGS,
    ArtifactRef,
    CompressedRef,
    ContractError,
    DeltaRef,
    Manifest,
    SizeMismatch,
    Step,
    TensorSpec,
    WindowSpec,
    check_blob,
    check_input,
    format_time,
    utc_now,
)
from edgeloop.contract.trust_targets import VersionSpec, golden_inputs
from edgeloop.runtime import CompiledModel, ModelLoadError

Report = Callable[[Step, int | None, str], None]  # step, target version, detail

# The time a model may take to load and pass its checks in the child process.
DEFAULT_CHECK_SECONDS = 10.0


@dataclass(frozen=True)
class UpdateResult:
    step: Step  # succeeded | failed | already_installed | idle (nothing offered)
    version: int | None
    detail: str
    error: UpdateError | None = None

    @property
    def retryable(self) -> bool:
        """The CDN or the disk failed, not the release: the same refresh may succeed later."""
        return isinstance(self.error, RetryableUpdateError)


class _NothingNew(Exception):
    """The pointer names no version newer than the installed one for this thing."""

    def __init__(self, step: Step, version: int | None, detail: str) -> None:
        super().__init__(detail)
        self.step, self.version, self.detail = step, version, detail


class Updater:
    def __init__(
        self,
        model: str,
        thing: str,
        store: ModelStore,
        scorer: Scorer,
        repository: Repository,
        sources: Sequence[ModelSource],
        device_input: TensorSpec,
        report: Report,
        max_bytes: int,
        on_swapped: Callable[[LoadedModel, LoadedModel | None], None] | None = None,
        probe: ModelProbe | None = None,
        clock: Callable[[], datetime] = utc_now,
        raw_source: WindowSpec | None = None,
    ) -> None:
        if not sources:
            raise ValueError("an updater needs at least one model source")
        self.model = model  # the only model this device installs
        self.thing = thing  # where the rollout pointer places this device
        self.store = store
        self.scorer = scorer
        self.repository = repository
        self.sources = tuple(sources)
        self.device_input = device_input
        # A device fed raw samples: its channels and rate decide which signal models fit.
        self.raw_source = raw_source
        self.report = report
        self.max_bytes = max_bytes
        self.on_swapped = on_swapped
        self.probe: ModelProbe = probe or ChildProcessProbe(timeout=DEFAULT_CHECK_SECONDS)
        self.clock = clock

    def handle(self, why: str = "", carried: Mapping[str, bytes] | None = None) -> UpdateResult:
        """Refresh, and install what the pointer names for this thing unless it runs already.

        `why` (a nudge, the timer) goes into the log only: it decides nothing.
        `carried` (the files a nudge brought) spares CDN requests, verified as the
        CDN's own would be.
        """
        try:
            return self._handle(why, carried)
        finally:
            self.repository.release()
            return_free_memory()

    def _handle(self, why: str, carried: Mapping[str, bytes] | None) -> UpdateResult:
        self.report(Step.RECEIVED, None, why)
        current = self.scorer.model
        cdn_before = self.repository.bytes_received
        in_nudge = sum(len(data) for data in (carried or {}).values())
        try:
            update = self._refresh(current, carried)
        except _NothingNew as nothing:
            self.report(nothing.step, nothing.version, nothing.detail)
            return UpdateResult(nothing.step, nothing.version, nothing.detail)
        except UpdateError as exc:
            return self._failed(exc.version, exc)
        manifest = update.manifest
        self.report(Step.VERIFIED, manifest.version, "")
        try:
            model_bytes = self._obtain(update, current)
            # Verifying (a child process, by default) is over before the model is tried
            # in another: the two never hold the device's memory at once.
            self.repository.release()
            loaded = self._check(manifest, model_bytes)
            self._stage(manifest, model_bytes)
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
        cdn = self.repository.bytes_received - cdn_before
        # What this update cost the device's link: the operator's first question.
        detail = (
            f"running v{manifest.version}: {cdn + in_nudge} B received "
            f"({cdn} B from the CDN, {in_nudge} B in the nudge)"
        )
        if current is not None and current.version >= manifest.version:
            # Followed down (an abort) or across (the same number, other bytes): said so.
            detail += f" (the rollout replaced v{current.version}, which it no longer offers here)"
        self.report(Step.SUCCEEDED, manifest.version, detail)
        return UpdateResult(Step.SUCCEEDED, manifest.version, detail)

    def _failed(self, version: int | None, error: UpdateError) -> UpdateResult:
        self.report(Step.FAILED, version, error.reason)
        return UpdateResult(Step.FAILED, version, error.reason, error)

    # --- the steps ---------------------------------------------------------------------

    def _refresh(
        self, current: LoadedModel | None, carried: Mapping[str, bytes] | None = None
    ) -> Update:
        """What the signed pointer names for this thing, as a verified update, or why not."""
        now = self.clock()
        floor = self.store.state.clock_floor
        if floor is not None and now + CLOCK_SKEW < floor:
            # Expiry is judged on this clock: behind what the device has already
            # seen, expired metadata could look fresh. Not a refresh until NTP ran.
            raise ClockBehind(
                f"this device's clock ({format_time(now)}) is behind the newest version it "
                f"installed ({format_time(floor)}); no refresh until the clock is set"
            )
        installed = (
            InstalledModel(current.version, current.manifest.artifact.sha256)
            if current is not None
            else None
        )
        offer = self.repository.refresh(self.model, self.thing, installed, carried)
        if offer.version is None:
            raise _NothingNew(Step.IDLE, None, "the rollout offers this device no version yet")
        if not offer.update:
            running = installed.version if installed is not None else None
            raise _NothingNew(Step.ALREADY_INSTALLED, running, f"v{running} is already running")
        if offer.version in self.store.state.refused:
            raise RefusedBefore(
                f"v{offer.version} failed on this device before; waiting for a newer version",
                version=offer.version,
            )
        try:
            update = self._assemble(offer)
        except ContractError as exc:
            raise ManifestRefused(str(exc), exc, version=offer.version) from exc
        check_binding(update.manifest, self.model, now)
        try:
            check_input(update.manifest, self.device_input, self.raw_source)
        except ContractError as exc:
            raise ManifestRefused(str(exc), exc, version=offer.version) from exc
        return update

    def _assemble(self, offer: Offer) -> Update:
        """The version as this device will keep it, from verified targets only."""
        version = offer.version
        model = offer.model
        assert version is not None
        assert model is not None
        if offer.spec is None or offer.golden is None:
            # Refused before a byte of the model is downloaded.
            raise Unchecked(
                f"{self.model} v{version} has no spec or golden inputs: no health checks; "
                "the device only installs a model it can try before serving it",
                version=version,
            )
        spec = VersionSpec.from_bytes(self.repository.download(offer.spec))
        if (spec.model, spec.version) != (self.model, version):
            raise TrustRefused(
                f"the spec signed for {self.model} v{version} describes "
                f"{spec.model} v{spec.version}",
                version=version,
            )
        golden = golden_inputs(self.repository.download(offer.golden, keep=True))
        compressed = None
        for encoding in FULL_ENCODINGS:
            packed = offer.compressed.get(encoding)
            if packed is not None:
                compressed = CompressedRef(encoding, packed.path, sha256_of(packed), packed.length)
                break
        deltas: tuple[DeltaRef, ...] = ()
        if offer.patch is not None:
            target, info = offer.patch
            deltas = (
                DeltaRef(
                    info.base_version,
                    info.base_sha256,
                    info.codec,
                    target.path,
                    sha256_of(target),
                    target.length,
                ),
            )
        artifact = ArtifactRef(model.path, sha256_of(model), model.length, compressed)
        return Update(spec.manifest(artifact, golden, deltas), offer)

    def _obtain(self, update: Update, current: LoadedModel | None) -> bytes:
        """The first model source that yields bytes matching the manifest wins."""
        manifest = update.manifest
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
                data = self._from(source, update, installed)
            except (ManifestRefused, TrustRefused, DownloadFailed, TrustUnavailable) as exc:
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
        self, source: ModelSource, update: Update, installed: Installed | None
    ) -> bytes | None:
        manifest = update.manifest

        def progress(step: Step, detail: str) -> None:
            self.report(step, manifest.version, detail)

        try:
            data = source.obtain(update, installed, progress)
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
        # A signal model takes its own window's width, whatever the device's default.
        window = manifest.window if self.raw_source is not None else None
        n_features = window.width if window is not None else self.device_input.shape[-1]
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

    def _stage(self, manifest: Manifest, model_bytes: bytes) -> None:
        try:
            self.store.stage(manifest.version, model_bytes, manifest.to_bytes())
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
