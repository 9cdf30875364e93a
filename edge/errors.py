"""Every failure the agent names, in one hierarchy.

An update fails in one of two ways, and the hierarchy says which:

    UpdateError
    ├── RetryableUpdateError      the CDN or the disk failed: refresh again later
    │   ├── DownloadFailed
    │   │   ├── NotOnCdn          the CDN answered 403 or 404
    │   │   └── RedirectRefused   the CDN redirected to another host
    │   ├── TrustUnavailable      the signed metadata could not be fetched now
    │   ├── MetadataExpired       the newest signed metadata has expired (a frozen CDN)
    │   ├── StagingFailed
    │   └── ClockBehind           the clock is behind what this device has seen
    └── UpdateRefused             the release or the model is wrong: final for that version
        ├── TrustRefused          TUF refused metadata or a target (signature, version, hash...)
        ├── ManifestRefused       a refusal of the wire contract (input spec, hash, patch base...)
        ├── NotThisDevice         a version of another model
        ├── ModelUnusable         the interpreter cannot load it, or it fits another device
        ├── ModelCrashed          it killed the interpreter in the child process that tried it
        ├── ModelTooSlow          it did not load and pass its checks within the time limit
        ├── Unchecked             the version carries no health checks to try it with
        ├── HealthCheckFailed     it does not give the expected outputs on the golden inputs
        └── RefusedBefore         it failed on this device before

The update worker retries by `isinstance(error, RetryableUpdateError)`; nothing
else is ever retried. Whatever the error, the old model keeps serving.

The agent's other failures: a config it cannot use (AgentConfigError), a data
source that cannot produce samples (SourceError; SourceGone when it never
will again), an upload that did not go this time (UploadFailed).
"""

from __future__ import annotations


class UpdateError(Exception):
    """One update failed; `reason` is what the status report says."""

    def __init__(
        self, message: str, cause: BaseException | None = None, version: int | None = None
    ) -> None:
        super().__init__(message)
        self.cause = cause
        # The version the update was about, once the signed pointer named it.
        self.version = version

    @property
    def reason(self) -> str:
        # A wrapped refusal is named by what refused it (HashMismatch, ModelLoadError):
        # that is the word an operator searches the docs and the logs for.
        kind = type(self.cause).__name__ if self.cause is not None else type(self).__name__
        message = str(self)
        return message if message.startswith(f"{kind}: ") else f"{kind}: {message}"


class RetryableUpdateError(UpdateError):
    """The same refresh may succeed later: the network or the disk failed, not the release."""


class DownloadFailed(RetryableUpdateError):
    """The file could not be fetched within the retries; the message says what happened last."""


class RedirectRefused(DownloadFailed):
    """The CDN redirected to another host; the device fetches only from its CDN."""


class NotOnCdn(DownloadFailed):
    """The CDN says the file is not there (403 or 404): not retried within one fetch.

    TUF asks for the next root version until one is missing; that answer is
    how a device knows it holds the newest root.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class TrustUnavailable(RetryableUpdateError):
    """The signed metadata could not be fetched now; the old model keeps serving."""


class MetadataExpired(RetryableUpdateError):
    """The repository's newest signed metadata has expired: the CDN is frozen or stale.

    Reported, and retried: the next timestamp the schedule signs ends it.
    """


class StagingFailed(RetryableUpdateError):
    """The new version could not be written to disk (disk full, read-only); nothing was swapped."""


class ClockBehind(RetryableUpdateError):
    """This device's clock is behind what it has seen (a version's creation time).

    Retried: a board without a real-time clock is behind until NTP has run,
    and the same refresh is good once it has.
    """


class UpdateRefused(UpdateError):
    """The release itself is wrong for this device; it is not retried."""


class TrustRefused(UpdateRefused):
    """The repository's metadata or a target failed TUF's checks (signature, version,
    length, hash): someone is lying; nothing it named is installed."""


class ManifestRefused(UpdateRefused):
    """The wire contract refused a verified version or the bytes it names (see
    edgeloop.contract): an input this device does not make, a malformed spec, a patch
    that does not produce the model."""


class NotThisDevice(UpdateRefused):
    """A validly signed version that does not bind to this device: another model's."""


class ModelUnusable(UpdateRefused):
    """The model does not load in this interpreter, or takes input this device does not make."""


class ModelCrashed(UpdateRefused):
    """The interpreter died (a signal, an abort) loading or checking the model in a child."""


class ModelTooSlow(UpdateRefused):
    """Loading and checking the model in a child process ran past the time limit."""


class Unchecked(UpdateRefused):
    """A version without health checks: a device only installs a model it can try first."""


class HealthCheckFailed(UpdateRefused):
    """The new model does not reproduce the expected outputs on the golden inputs."""


class RefusedBefore(UpdateRefused):
    """This version failed on this device before; only a newer one is tried."""


class AgentConfigError(ValueError):
    """The agent config cannot be used; the message names the key."""


class SourceError(ValueError):
    """One sample could not be read; the message says which line and why. The source goes on."""


class SourceGone(Exception):
    """The data source cannot produce samples any more (a missing file): the agent must stop."""


class UploadFailed(Exception):
    """A batch could not be sent this time; it stays queued."""


class ProvisioningFailed(Exception):
    """The device could not get an identity by claim. `final` when asking again cannot
    help (the cloud refused this serial); otherwise it may be retried later."""

    def __init__(self, message: str, final: bool) -> None:
        super().__init__(message)
        self.final = final
