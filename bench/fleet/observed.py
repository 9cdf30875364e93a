"""The one device of a run that updates for real, and what its update asks of the CDN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.fleet.settings import MODEL
from edge.download import HttpFetcher
from edge.targets import InstalledModel
from edge.trust import SignedRepository, TrustLimits
from edgeloop.contract import Nudge
from edgeloop.contract.trust_targets import REPOSITORY_PREFIX
from edgeloop.local.cdn import BucketOrigin, LocalCdn
from edgeloop.trust.store import mutable


def origin_gets(paths: list[str]) -> int:
    """The CDN requests CloudFront passes to the bucket every time: objects stored
    no-cache (the timestamp), which it must re-check. An upper bound: the cache policy's
    one-second minimum can answer requests arriving together at one edge. The rest are
    immutable, or a missing root (the probe), whose error CloudFront caches."""
    return sum(1 for path in paths if mutable(path))


class CountingOrigin:
    """The CDN's origin (the artifact bucket behind an edge cache), counting every
    request a device makes of the CDN, a 404 (the root probe) included."""

    def __init__(self, inner: BucketOrigin) -> None:
        self._inner = inner
        self.requests: list[str] = []

    def get(self, key: str) -> bytes:
        self.requests.append(key)
        return self._inner.get(key)


class ObservedDevice:
    """One device of the fleet updated for real: edge.trust's SignedRepository (python-tuf's
    ngclient over the agent's HTTP fetcher) against the CDN stand-in in front of the
    run's artifact bucket. It holds v1 before the rollout and is nudged for v2 by the
    publish that reaches its band; every CDN request and byte of that update is counted."""

    def __init__(self, workdir: Path, s3: Any, bucket: str, root: bytes, thing: str) -> None:
        self.origin = CountingOrigin(BucketOrigin(s3, bucket))
        self.cdn = LocalCdn(self.origin)
        self.thing = thing
        self.signed = SignedRepository(
            HttpFetcher(self.cdn.base_url + REPOSITORY_PREFIX, 10.0, 3),
            root,
            workdir,
            limits=TrustLimits(min_refresh_seconds=0.0),
        )
        self.installed: InstalledModel | None = None
        self.update: dict[str, Any] | None = None

    def install(self, nudge: bytes | None) -> dict[str, Any]:
        """Refresh (with what the nudge carries, if any) and fetch what the offered
        version takes: spec, golden inputs unless held, patch or compressed model."""
        before, received = len(self.origin.requests), self.signed.bytes_received
        carried = Nudge.from_bytes(nudge).files if nudge is not None else None
        offer = self.signed.refresh(MODEL, self.thing, self.installed, carried)
        assert offer.model is not None, offer
        for target in (offer.spec, offer.golden):
            if target is not None:
                self.signed.download(target, keep=target is offer.golden)
        if offer.patch is not None:
            self.signed.download(offer.patch[0])
        else:
            self.signed.download(offer.compressed["zstd"])
        assert offer.version is not None
        self.installed = InstalledModel(offer.version, offer.model.hashes["sha256"])
        asked = self.origin.requests[before:]
        return {
            "version": offer.version,
            "nudge_bytes": 0 if nudge is None else len(nudge),
            "carried": sorted(carried or {}),
            "cdn_requests": len(asked),
            "origin_gets": origin_gets(asked),
            "bytes": self.signed.bytes_received - received,
            "paths": asked,
        }

    def stop(self) -> None:
        self.cdn.stop()
