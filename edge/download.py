"""Downloading from the CDN: size cap, timeouts, retries with backoff, resume.

`HttpFetcher` is what the device uses underneath python-tuf's ngclient
(edge.trust): metadata is read whole under a cap, targets into a staging file.
The signed metadata says how big every target is, so a download never reads
past that: a server that keeps sending is cut off at the declared length. A
partial file survives a network drop or a restart in the staging directory,
and the next attempt asks for the rest with an HTTP Range request.

The timeout bounds each read; a path that sends a byte just inside it would
hold the update thread for hours. So each fetch also has an overall deadline,
from its length (signed, or the cap) at a minimum throughput, across its
retries: `timeout + length / min_bytes_per_second`. And a redirect is followed
only on the CDN's own host: the signed hashes would catch other bytes, but the
device has no business asking another host for them.
"""

from __future__ import annotations

import http.client
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge.backoff import Backoff
from edge.errors import DownloadFailed, NotOnCdn, RedirectRefused
from edgeloop.contract import SizeMismatch

CHUNK = 64 * 1024
_TRANSIENT = (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError)
# A slow cellular link still moves a few KB/s; below this a fetch is given up on.
MIN_BYTES_PER_SECOND = 1024.0


class DeadlinePassed(TimeoutError):
    """The fetch took longer than its length allows at the minimum throughput."""


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the scheme, host and port the request went to."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: object,
        code: int,
        msg: str,
        headers: object,
        newurl: str,
    ) -> urllib.request.Request | None:
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if (old.scheme, old.netloc) != (new.scheme, new.netloc):
            raise RedirectRefused(
                f"{req.full_url}: HTTP {code} redirect to another host ({new.scheme}://"
                f"{new.netloc}) refused; the device fetches only from its CDN"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)  # type: ignore[arg-type]


_OPENER = urllib.request.build_opener(_SameHostRedirects)


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
    min_bytes_per_second: float = MIN_BYTES_PER_SECOND
    clock: Callable[[], float] = time.monotonic

    def deadline(self, size: int) -> float:
        """The seconds a fetch of `size` bytes may take in all, retries included."""
        return self.timeout + size / self.min_bytes_per_second

    def fetch(self, path: str, dest: Path, size: int) -> bytes:
        url = self.base_url + path
        until = self.clock() + self.deadline(size)
        return self._with_retries(url, until, lambda: self._fetch_once(url, dest, size, until))

    def fetch_at_most(self, path: str, max_size: int) -> bytes:
        """The whole file at `path`, refused once it passes `max_size` bytes.

        For files whose exact size nothing declares in advance (TUF's timestamp,
        a root version being probed): small, so fetched whole, never resumed.
        """
        url = self.base_url + path
        until = self.clock() + self.deadline(max_size)
        return self._with_retries(url, until, lambda: self._read_capped(url, max_size, until))

    def _with_retries(self, url: str, until: float, attempt_once: Callable[[], bytes]) -> bytes:
        # Full jitter: a fleet that lost the CDN together does not retry together.
        pauses = Backoff(self.backoff, self.backoff * 2 ** max(self.retries - 1, 0), self.rng)
        last = "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(pauses.next())
            try:
                return attempt_once()
            except DeadlinePassed as exc:
                raise DownloadFailed(f"{url}: {exc}") from exc
            except _TRANSIENT as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
                if isinstance(exc, urllib.error.HTTPError) and exc.code in (403, 404):
                    # The CDN says it is not there; retrying will not change that.
                    raise NotOnCdn(f"{url}: HTTP {exc.code}", status=exc.code) from exc
        raise DownloadFailed(f"{url}: gave up after {attempt + 1} attempts ({last})")

    def _open(self, request: urllib.request.Request, until: float) -> http.client.HTTPResponse:
        self._check_deadline(request.full_url, until)
        response: http.client.HTTPResponse = _OPENER.open(request, timeout=self.timeout)
        return response

    def _check_deadline(self, url: str, until: float) -> None:
        # Checked between reads: a read may overrun it by one timeout at most.
        if self.clock() > until:
            raise DeadlinePassed(
                f"not done within its deadline (the {self.timeout:g} s timeout plus its length "
                f"at {self.min_bytes_per_second:g} bytes/s); given up, to be tried again later"
            )

    def _read_capped(self, url: str, max_size: int, until: float) -> bytes:
        request = urllib.request.Request(url, headers={"User-Agent": self.user_agent})
        body = bytearray()
        with self._open(request, until) as response:
            while chunk := response.read1(min(CHUNK, max_size - len(body) + 1)):
                self._check_deadline(url, until)
                self._count(len(chunk))
                body += chunk
                if len(body) > max_size:
                    raise SizeMismatch(f"{url} sends more than {max_size} bytes; cut off")
        return bytes(body)

    def _count(self, n: int) -> None:
        if self.on_bytes is not None:
            self.on_bytes(n)

    def _fetch_once(self, url: str, dest: Path, size: int, until: float) -> bytes:
        try:
            self._fetch_to(url, dest, size, until)
        except SizeMismatch:
            dest.unlink(missing_ok=True)
            raise
        return dest.read_bytes()

    def _fetch_to(self, url: str, dest: Path, size: int, until: float) -> None:
        have = dest.stat().st_size if dest.exists() else 0
        if have > size:
            dest.unlink()
            have = 0
        if have == size:
            return
        request = urllib.request.Request(url, headers={"User-Agent": self.user_agent})
        if have:
            request.add_header("Range", f"bytes={have}-")
        with self._open(request, until) as response:
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
                    self._check_deadline(url, until)
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
