"""The device's side of the fleet's TUF repository: refresh, decide, fetch verified.

python-tuf's ngclient does the verifying (root rotation, expiry, rollback,
signature thresholds, lengths, hashes); this module gives it the agent's HTTP
fetching (timeouts, retries, resume, size caps), limits how often a device
refreshes, and turns the model's signed rollout pointer into one decision for
this thing: the version to run, and the targets to get it with.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, TargetFile, Targets
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from edge.download import HttpFetcher
from edge.errors import (
    DownloadFailed,
    MetadataExpired,
    NotOnCdn,
    TrustRefused,
    TrustUnavailable,
)
from edge.targets import InstalledModel, Offer, SignedTarget, sha256_of
from edgeloop.contract import CODECS, FULL_ENCODINGS, ContractError, SizeMismatch
from edgeloop.contract.trust_targets import (
    PatchInfo,
    RolloutPointer,
    compressed_path,
    model_path,
    patch_path,
    pointer_path,
)

log = logging.getLogger(__name__)

METADATA = "tuf/metadata/"
TARGETS = "tuf/targets/"
# TUF's freshness role: the one file that says what the repository holds now. It is
# never taken from a nudge (see `CdnFetcher`).
TIMESTAMP = METADATA + "timestamp.json"
# ngclient's root probe: the next root version, asked for until the CDN says 404.
_ROOT_PROBE = re.compile(re.escape(METADATA) + r"[1-9][0-9]*\.root\.json")


@dataclass(frozen=True)
class TrustLimits:
    """Caps on what a refresh may download, and how often it may run.

    The caps are well above what one model's metadata needs (a few KB) and far
    below what would hurt a small device: a lying CDN is cut off early.
    """

    root_max_bytes: int = 64 * 1024
    timestamp_max_bytes: int = 4 * 1024
    snapshot_max_bytes: int = 64 * 1024
    targets_max_bytes: int = 512 * 1024
    max_root_rotations: int = 32
    # A storm of nudges costs the CDN one refresh per device per interval.
    min_refresh_seconds: float = 30.0

    def updater_config(self) -> UpdaterConfig:
        return UpdaterConfig(
            max_root_rotations=self.max_root_rotations,
            max_delegations=4,
            root_max_length=self.root_max_bytes,
            timestamp_max_length=self.timestamp_max_bytes,
            snapshot_max_length=self.snapshot_max_bytes,
            targets_max_length=self.targets_max_bytes,
        )


class CdnFetcher(FetcherInterface):
    """ngclient's network side over the agent's HttpFetcher.

    Metadata (small, sometimes of unknown exact size) is read whole under a
    cap; targets (exact size known) go through the resumable staging file.
    Files a nudge carried (by path under the repository root) are served from
    memory instead, under the same caps: ngclient verifies them as it verifies
    anything the CDN sends, so serving them here trusts them no more.

    Except the timestamp: it always comes from the CDN. A carried timestamp is
    validly signed for hours, so a nudge captured before an abort, or queued in
    a persistent session while the abort went out, would still verify and name
    the withdrawn version. The CDN's timestamp is the newest state (no-cache:
    CloudFront asks S3 each time), and everything it leads to is versioned or
    hash-named, so a carried snapshot, role or target is used only when the
    fresh timestamp names exactly that file: a cache, never a source of news.

    With `probe_root=False` (a refresh a nudge caused), a next root the nudge did
    not carry is answered "not found" here instead of by a billed CDN request.
    That skips nothing a device could rely on: a root rotated to replace the
    online keys makes the CDN's fresh timestamp fail against the trusted root, and
    any failure is refreshed again from the CDN with the probe (`_refreshed`); a
    root rotated for its own keys alone is taken at the next timer refresh, which
    always probes; and a path that could forge the timestamp could answer the probe
    404 as well. Expiry of the trusted root is still checked by ngclient.
    """

    def __init__(
        self,
        http: HttpFetcher,
        staging: Path,
        carried: Mapping[str, bytes] | None = None,
        *,
        probe_root: bool = True,
    ) -> None:
        self._http = http
        self._staging = staging
        self._carried = dict(carried or {})
        self._probe_root = probe_root
        self.from_nudge: list[str] = []  # paths served from the carried files
        self.from_cdn: list[str] = []  # paths asked of the CDN (a 404 too)
        self.unprobed: list[str] = []  # root probes answered "not found" here

    def forget(self, path: str) -> bool:
        """Serve `path` from the CDN from now on; True if it was carried."""
        return self._carried.pop(path, None) is not None

    def _carried_copy(self, path: str, max_length: int) -> bytes | None:
        if path == TIMESTAMP:
            return None  # freshness comes from the CDN, whatever a nudge carries
        data = self._carried.get(path)
        if data is None:
            return None
        self.from_nudge.append(path)
        if len(data) > max_length:
            raise tuf_errors.DownloadLengthMismatchError(
                f"{path} as the nudge carried it is {len(data)} bytes, over {max_length}"
            )
        return data

    def _path(self, url: str) -> str:
        if not url.startswith(self._http.base_url):
            raise tuf_errors.DownloadError(f"{url} is outside the CDN {self._http.base_url}")
        return url[len(self._http.base_url) :]

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except NotOnCdn as exc:
            raise tuf_errors.DownloadHTTPError(str(exc), exc.status) from exc
        except SizeMismatch as exc:
            raise tuf_errors.DownloadLengthMismatchError(str(exc)) from exc
        except DownloadFailed as exc:
            raise tuf_errors.DownloadError(str(exc)) from exc

    def _fetch(self, url: str) -> Iterator[bytes]:
        # Only reached through the base class's own helpers, which this class replaces.
        yield self.download_bytes(url, self._http_cap)

    _http_cap = 64 * 1024

    def download_bytes(self, url: str, max_length: int) -> bytes:
        path = self._path(url)
        carried = self._carried_copy(path, max_length)
        if carried is not None:
            return carried
        if not self._probe_root and _ROOT_PROBE.fullmatch(path):
            self.unprobed.append(path)
            raise tuf_errors.DownloadHTTPError(f"{path}: not carried, not probed", 404)
        self.from_cdn.append(path)
        with self._translated():
            return self._http.fetch_at_most(path, max_length)

    @contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        path = self._path(url)
        carried = self._carried_copy(path, max_length)
        if carried is not None:
            yield io.BytesIO(carried)
            return
        self.from_cdn.append(path)
        self._staging.mkdir(parents=True, exist_ok=True)
        dest = self._staging / (quote(path, safe="") + ".part")
        with self._translated():
            self._http.fetch(path, dest, max_length)
        try:
            with dest.open("rb") as staged:
                yield staged
        finally:
            dest.unlink(missing_ok=True)


class SignedRepository:
    """The fleet's repository as this device trusts it, anchored in a shipped root."""

    def __init__(
        self,
        http: HttpFetcher,
        root: bytes,
        state_dir: Path,
        *,
        limits: TrustLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        staging: Path | None = None,
    ) -> None:
        self.limits = limits or TrustLimits()
        self.bytes_received = 0
        self._http = dataclasses.replace(http, on_bytes=self._received)
        self._root = root
        self._metadata_dir = state_dir / "metadata"
        # Only content-addressed targets (golden inputs) are kept here; models and
        # patches pass through `staging` and the agent's model store keeps them.
        self._targets_dir = state_dir / "targets"
        self._staging = staging or state_dir / "staging"
        self._clock = clock
        self._updater: Updater | None = None
        self._fetcher: CdnFetcher | None = None
        # Whether the last refresh started from a root kept here, not the shipped one.
        self._kept_root = False
        self._last: dict[str, tuple[float, Offer]] = {}

    def _received(self, n: int) -> None:
        self.bytes_received += n

    @contextmanager
    def _checked(self) -> Iterator[None]:
        try:
            yield
        except tuf_errors.ExpiredMetadataError as exc:
            raise MetadataExpired(f"signed metadata has expired: {exc}", exc) from exc
        except tuf_errors.UnsignedMetadataError as exc:
            if not self._kept_root:
                # Nothing kept: the root this device ships with is not this cloud's.
                raise TrustRefused(
                    f"{type(exc).__name__}: {exc}; the trust root this device starts from "
                    "([trust] root) is not this cloud's root: use the cloud's root.json",
                    exc,
                ) from exc
            # Most often a cloud set up anew (a new root) behind a device that kept the
            # old one; the fix is to forget it, which nothing should do unasked.
            raise TrustRefused(
                f"{type(exc).__name__}: {exc}; if this cloud was set up anew, this device's "
                f"trust root is not its root: remove {self._metadata_dir} (or start the "
                "device with the cloud's root.json as [trust] root)",
                exc,
            ) from exc
        except tuf_errors.RepositoryError as exc:
            raise TrustRefused(f"{type(exc).__name__}: {exc}", exc) from exc
        except tuf_errors.DownloadLengthMismatchError as exc:
            raise TrustRefused(f"endless data: {exc}", exc) from exc
        except tuf_errors.DownloadError as exc:
            raise TrustUnavailable(f"{type(exc).__name__}: {exc}", exc) from exc
        except ContractError as exc:
            raise TrustRefused(f"signed metadata breaks the contract: {exc}", exc) from exc

    def _new_updater(self, fetcher: CdnFetcher) -> Updater:
        self._metadata_dir.mkdir(parents=True, exist_ok=True)
        # The shipped root is the anchor only until a newer root has been verified and kept.
        have_root = (self._metadata_dir / "root.json").exists()
        self._kept_root = have_root
        return Updater(
            metadata_dir=str(self._metadata_dir),
            metadata_base_url=self._http.base_url + METADATA,
            target_dir=str(self._targets_dir),
            target_base_url=self._http.base_url + TARGETS,
            fetcher=fetcher,
            config=self.limits.updater_config(),
            bootstrap=None if have_root else self._root,
        )

    def refresh(
        self,
        model: str,
        thing: str,
        installed: InstalledModel | None,
        carried: Mapping[str, bytes] | None = None,
    ) -> Offer:
        """Refresh the metadata (at most once per `min_refresh_seconds` per model) and
        decide. Raises TrustUnavailable, MetadataExpired or TrustRefused; whichever,
        the installed model keeps serving.

        `carried` are the files a nudge brought (path under the repository root:
        bytes), tried before the CDN and verified exactly as the CDN's would be.
        A refresh they fail (expired, older than what this device trusts, forged)
        is done again from the CDN alone, at once.
        """
        now = self._clock()
        last = self._last.get(model)
        if last is not None and now - last[0] < self.limits.min_refresh_seconds:
            return dataclasses.replace(last[1], fresh=False)
        # Counted as a refresh even if it fails: a failing CDN is not asked harder. A
        # refresh from carried files counts too: a forged nudge falls back to the CDN,
        # so exempting them would let replayed nudges drive CDN requests.
        self._last[model] = (now, last[1] if last else Offer(model, None, None))
        with self._checked():
            offer = self._refreshed(model, thing, installed, carried or {})
        self._last[model] = (now, offer)
        return offer

    def _refreshed(
        self,
        model: str,
        thing: str,
        installed: InstalledModel | None,
        carried: Mapping[str, bytes],
    ) -> Offer:
        """Refresh and decide: ngclient loads the model's role only when the decision
        asks for its targets, so a carried role is judged there."""
        fetcher = CdnFetcher(self._http, self._staging, carried, probe_root=not carried)
        updater = self._new_updater(fetcher)
        try:
            updater.refresh()
            offer = self._decide(updater, model, thing, installed)
        except (tuf_errors.RepositoryError, tuf_errors.DownloadLengthMismatchError) as exc:
            if not (fetcher.from_nudge or fetcher.unprobed):
                raise
            # Perhaps the nudge's fault (hours old and expired, older than what this
            # device trusts, forged): none of it was trusted, so ask the CDN alone.
            log.warning(
                "event=nudge_metadata_refused model=%s carried=%d reason=%r; "
                "refreshing from the CDN alone",
                model,
                len(fetcher.from_nudge),
                f"{type(exc).__name__}: {exc}"[:200],
            )
            fetcher = CdnFetcher(self._http, self._staging)
            updater = self._new_updater(fetcher)
            updater.refresh()
            offer = self._decide(updater, model, thing, installed)
        # "from_nudge=3 cdn_requests=1": the nudge's files answered, the CDN only the
        # timestamp (the root probe, unprobed, was answered here).
        log.info(
            "event=refreshed model=%s from_nudge=%d cdn_requests=%d",
            model,
            len(fetcher.from_nudge),
            len(fetcher.from_cdn),
        )
        self._updater, self._fetcher = updater, fetcher
        return offer

    def _decide(
        self, updater: Updater, model: str, thing: str, installed: InstalledModel | None
    ) -> Offer:
        info = updater.get_targetinfo(pointer_path(model))
        if info is None:
            return Offer(model, None, None)
        pointer = RolloutPointer.from_json(info.custom)
        if pointer.model != model:
            raise TrustRefused(f"the pointer at {info.path} is for {pointer.model}")
        version = pointer.version_for(thing)
        if version is None:
            return Offer(model, None, pointer)
        full = updater.get_targetinfo(model_path(model, version))
        if full is None:
            raise TrustRefused(f"the pointer names {model} v{version}, which has no signed target")
        # A version is its bytes: "already running" only when the installed model has
        # the number and the signed hash. The pointer is followed both ways: a lower
        # version it names (an abort, a superseded rollout) is installed like a higher one.
        if installed == InstalledModel(version, sha256_of(full)):
            return Offer(model, version, pointer)
        compressed = {
            encoding: target
            for encoding in FULL_ENCODINGS
            if (target := updater.get_targetinfo(compressed_path(model, version, encoding)))
        }
        patch = None
        if installed is not None and installed.version != version:
            for codec in CODECS:
                target = updater.get_targetinfo(
                    patch_path(model, installed.version, version, codec)
                )
                if target is None:
                    continue
                made = PatchInfo.from_json(target.custom)
                if made.base_sha256 == installed.sha256 and made.produces == full.path:
                    patch = (target, made)
                    break
        golden = self._named(updater, full, "golden")
        spec = self._named(updater, full, "spec")
        return Offer(
            model,
            version,
            pointer,
            model=full,
            compressed=compressed,
            patch=patch,
            golden=golden,
            golden_cached=golden is not None and self.cached(golden) is not None,
            spec=spec,
        )

    @staticmethod
    def _named(updater: Updater, full: TargetFile, key: str) -> TargetFile | None:
        """The target the model target's custom metadata names under `key`, if any."""
        path = full.custom.get(key) if isinstance(full.custom, dict) else None
        if not isinstance(path, str):
            return None
        target = updater.get_targetinfo(path)
        if target is None:
            raise TrustRefused(f"{full.path} names {key} {path} nobody signed")
        return target

    def vouches_for(self, model: str, version: int, data: bytes) -> bool | None:
        """Whether the metadata this device last verified signs `data` as `version`'s
        model, read from disk without the network, at agent start.

        True or False; None when that metadata no longer lists the version (pruned
        from the role after newer releases: the next refresh moves the device on).
        The kept metadata is verified again (root → top-level targets → the
        model's role), so an edited metadata file is no more believed than an
        edited model; missing or unverifiable metadata vouches for nothing
        (False). Expiry is not judged: the question is which bytes were signed.
        """
        try:
            root = Metadata[Root].from_bytes((self._metadata_dir / "root.json").read_bytes())
            top = Metadata[Targets].from_bytes((self._metadata_dir / "targets.json").read_bytes())
            role_file = self._metadata_dir / f"{quote(model, safe='')}.json"
            role = Metadata[Targets].from_bytes(role_file.read_bytes())
            root.verify_delegate(Targets.type, top)
            top.verify_delegate(model, role)
        except (OSError, ValueError, tuf_errors.RepositoryError) as exc:
            log.error("event=kept_metadata_unusable model=%s reason=%r", model, str(exc)[:200])
            return False
        target = role.signed.targets.get(model_path(model, version))
        if target is None:
            return None
        try:
            target.verify_length_and_hashes(data)
        except tuf_errors.LengthOrHashMismatchError:
            return False
        return True

    def release(self) -> None:
        """Nothing to let go of: this repository verifies in the agent's own process."""

    def abort(self) -> None:
        """Nothing to end: a refresh here stops with the agent's process."""

    def _target_file(self, target: TargetFile) -> Path:
        return self._targets_dir / quote(target.path, safe="")

    def cached(self, target: TargetFile) -> bytes | None:
        """The target's bytes if this device already holds them, verified again."""
        path = self._target_file(target)
        try:
            data = path.read_bytes()
            target.verify_length_and_hashes(data)
        except (OSError, tuf_errors.LengthOrHashMismatchError):
            return None
        return data

    def download(self, target: SignedTarget, keep: bool = False) -> bytes:
        """The target's bytes, checked by ngclient against its signed length and hashes.

        With `keep`, the verified file stays for `cached` (content-addressed targets);
        otherwise it passes through the staging directory and is gone after.
        """
        if self._updater is None:
            raise TrustRefused("download before any refresh: nothing is trusted yet")
        if not isinstance(target, TargetFile):
            target = TargetFile(target.length, dict(target.hashes), target.path)
        held = self.cached(target)
        if held is not None:
            return held
        if keep:
            self._targets_dir.mkdir(parents=True, exist_ok=True)
            destination = self._target_file(target)
        else:
            self._staging.mkdir(parents=True, exist_ok=True)
            destination = self._staging / (quote(target.path, safe="") + ".verified")
        with self._checked():
            try:
                path = Path(self._updater.download_target(target, str(destination)))
            except (tuf_errors.RepositoryError, tuf_errors.DownloadLengthMismatchError) as exc:
                carried = TARGETS + target.get_prefixed_paths()[0]
                if self._fetcher is None or not self._fetcher.forget(carried):
                    raise
                # The nudge's copy failed ngclient's check: never used, fetched again.
                log.warning(
                    "event=nudge_target_refused target=%s reason=%r; fetching it from the CDN",
                    target.path,
                    f"{type(exc).__name__}: {exc}"[:200],
                )
                path = Path(self._updater.download_target(target, str(destination)))
        try:
            return path.read_bytes()
        finally:
            if not keep:
                path.unlink(missing_ok=True)
