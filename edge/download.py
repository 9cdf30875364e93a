"""Downloading from the CDN: size cap, timeouts, retries with backoff, resume.

`HttpFetcher` is what the device uses underneath python-tuf's ngclient
(edge.trust): metadata is read whole under a cap, targets into a staging file.
The signed metadata says how big every target is, so a download never reads
past that: a server that keeps sending is cut off at the declared length. A
partial file survives a network drop or a restart in the staging directory,
and the next attempt asks for the rest with an HTTP Range request.
"""

from __future__ import annotations

import http.client
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge.backoff import Backoff
from edge.errors import DownloadFailed, NotOnCdn
from edgeloop.contract import SizeMismatch

CHUNK = 64 * 1024
_TRANSIENT = (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError)


@dataclass(frozen=True)
class HttpFetcher:
    base_url: str
    timeout: float
    retries: int
    backoff: float = 0.5
    sleep: Callable[[float], None] = time.sleep
    # Names the device in CDN logs (and the local CDN's byte counts).
    user_agent: str = "edgeloop-agent"
    rng: random.Random = field(default_factory=random.Random)
    # Told every body byte as it arrives, resumed or not: the honest bytes figure.
    on_bytes: Callable[[int], None] | None = None

    def fetch(self, path: str, dest: Path, size: int) -> bytes:
        url = self.base_url + path
        return self._with_retries(url, lambda: self._fetch_once(url, dest, size))

    def fetch_at_most(self, path: str, max_size: int) -> bytes:
        """The whole file at `path`, refused once it passes `max_size` bytes.

        For files whose exact size nothing declares in advance (TUF's timestamp,
        a root version being probed): small, so fetched whole, never resumed.
        """
        url = self.base_url + path
        return self._with_retries(url, lambda: self._read_capped(url, max_size))

    def _with_retries(self, url: str, attempt_once: Callable[[], bytes]) -> bytes:
        # Full jitter: a fleet that lost the CDN together does not retry together.
        pauses = Backoff(self.backoff, self.backoff * 2 ** max(self.retries - 1, 0), self.rng)
        last = "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(pauses.next())
            try:
                return attempt_once()
            except _TRANSIENT as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
                if isinstance(exc, urllib.error.HTTPError) and exc.code in (403, 404):
                    # The CDN says it is not there; retrying will not change that.
                    raise NotOnCdn(f"{url}: HTTP {exc.code}", status=exc.code) from exc
        raise DownloadFailed(f"{url}: gave up after {attempt + 1} attempts ({last})")

    def _read_capped(self, url: str, max_size: int) -> bytes:
        request = urllib.request.Request(url, headers={"User-Agent": self.user_agent})
        body = bytearray()
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            while chunk := response.read1(min(CHUNK, max_size - len(body) + 1)):
                self._count(len(chunk))
                body += chunk
                if len(body) > max_size:
                    raise SizeMismatch(f"{url} sends more than {max_size} bytes; cut off")
        return bytes(body)

    def _count(self, n: int) -> None:
        if self.on_bytes is not None:
            self.on_bytes(n)

    def _fetch_once(self, url: str, dest: Path, size: int) -> bytes:
        try:
            self._fetch_to(url, dest, size)
        except SizeMismatch:
            dest.unlink(missing_ok=True)
            raise
        return dest.read_bytes()

    def _fetch_to(self, url: str, dest: Path, size: int) -> None:
        have = dest.stat().st_size if dest.exists() else 0
        if have > size:
            dest.unlink()
            have = 0
        if have == size:
            return
        request = urllib.request.Request(url, headers={"User-Agent": self.user_agent})
        if have:
            request.add_header("Range", f"bytes={have}-")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            if have and response.status != 206:
                have = 0  # the server ignored the range: start over
            with open(dest, "r+b" if have else "wb") as out:
                out.seek(have)
                out.truncate()
                received = have
                while True:
                    # read1 returns what has arrived, so a stalled server leaves
                    # what it did send on disk for the next attempt to resume.
                    chunk = response.read1(min(CHUNK, size - received + 1))
                    if not chunk:
                        break
                    received += len(chunk)
                    self._count(len(chunk))
                    if received > size:
                        raise SizeMismatch(
                            f"{url} sends more than the {size} bytes the signed metadata declares; "
                            "cut off, the download is discarded"
                        )
                    out.write(chunk)
                    out.flush()  # survives a killed process; the OS keeps it
        if received < size:
            raise ConnectionError(f"connection closed after {received} of {size} bytes")
