"""The CDN stand-in: serves `models/` from an origin (the artifact bucket) over HTTP, with Range.

It also counts the bytes it serves to each device (by User-Agent), which is
what the demo reports as bytes shipped.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from botocore.exceptions import ClientError

from edgeloop.trust.store import mutable


@dataclass
class Shipment:
    device: str
    path: str
    bytes: int

    @property
    def kind(self) -> str:
        """What the bytes were: signed metadata, a full model (plain or compressed), a
        patch, or the small files beside a version (spec, golden inputs, pointer)."""
        if "/tuf/metadata/" in self.path:
            return "metadata"
        name = self.path.rsplit("/", 1)[-1]
        if name.endswith((".model.tflite", ".model.tflite.zstd")):
            return "full"
        if ".from-" in name:
            return "patch"
        return "metadata"


@dataclass
class CdnLog:
    shipments: list[Shipment] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, device: str, path: str, size: int) -> None:
        with self.lock:
            self.shipments.append(Shipment(device, path, size))

    def bytes_by_device(self) -> dict[str, dict[str, int]]:
        totals: dict[str, dict[str, int]] = defaultdict(
            lambda: {"full": 0, "patch": 0, "metadata": 0}
        )
        with self.lock:
            for s in self.shipments:
                totals[s.device][s.kind] += s.bytes
        return dict(totals)


_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class Origin(Protocol):
    """Where the CDN reads what it serves."""

    def get(self, key: str) -> bytes:
        """The object's bytes: KeyError when there is no such object,
        OriginUnavailable when the origin could not answer."""


class OriginUnavailable(RuntimeError):
    """The origin failed for another reason than a missing object (a CDN answers 502)."""


class BucketOrigin:
    """The artifact bucket behind an edge cache.

    The repository's files live under versioned or hash-prefixed names and never
    change once written, so, like CloudFront with a long TTL, each is read from
    the bucket once. The timestamp is always read through (edgeloop.trust.store:
    it is the one file a CDN must re-check), and a missing object is never
    remembered: a device probing for the next root must see it once it exists.
    """

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3, self._bucket = s3, bucket
        self._objects: dict[str, bytes] = {}
        self._fetching: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def prime(self, key: str, body: bytes) -> None:
        """Put a just-published artifact in the cache, as an edge cache warmed at
        publish time holds it; the soak does this because moto cannot also serve
        a thousand uploads at once."""
        with self._lock:
            self._objects[key] = body

    def get(self, key: str) -> bytes:
        with self._lock:
            cached = self._objects.get(key)
            if cached is not None:
                return cached
            fetching = self._fetching.setdefault(key, threading.Lock())
        # One read from the bucket per key, however many devices ask at once: a
        # thousand devices fetching a new patch together would otherwise be a
        # thousand requests to the origin (the single-flight a CDN does too).
        with fetching:
            with self._lock:
                cached = self._objects.get(key)
            if cached is not None:
                return cached
            body = self._read(key)
            if not mutable(key):
                with self._lock:
                    self._objects[key] = body
            return body

    def _read(self, key: str) -> bytes:
        try:
            body: bytes = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                raise KeyError(key) from exc
            raise OriginUnavailable(f"s3://{self._bucket}/{key}: {exc}") from exc
        return body


class LocalCdn:
    """`models/` of an origin over HTTP on loopback, with Range, counting bytes per device."""

    def __init__(
        self,
        origin: Origin,
        host: str = "127.0.0.1",
        port: int = 0,
        advertised: str | None = None,
    ) -> None:
        """Listens on `host`:`port` (0: any free one); devices are given `advertised`
        (default `host`) in the base URL."""
        self.origin = origin
        self.log = CdnLog()
        self._server = ThreadingHTTPServer((host, port), _request_handler(self))
        self._server.daemon_threads = True
        self.base_url = f"http://{advertised or host}:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="cdn", daemon=True)
        self._thread.start()

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        """Answer one GET: 403 outside `models/`, 404 for a missing object, else the
        object or the byte range asked for (206), or 416 for a range past its end."""
        key = request.path.lstrip("/")
        if not key.startswith("models/") or ".." in key.split("/"):
            _refuse(request, 403)
            return
        try:
            body = self.origin.get(key)
        except KeyError:
            # Every refresh asks for the next root version and expects this answer.
            _refuse(request, 404)
            return
        except OriginUnavailable:
            _refuse(request, 502)
            return
        match = _RANGE.fullmatch(request.headers.get("Range") or "")
        first, last = 0, len(body) - 1
        if match:
            first = int(match.group(1))
            if match.group(2):
                last = min(last, int(match.group(2)))
            if first > last:
                request.send_response(416)
                request.send_header("Content-Range", f"bytes */{len(body)}")
                request.send_header("Content-Length", "0")
                request.end_headers()
                return
            request.send_response(206)
            request.send_header("Content-Range", f"bytes {first}-{last}/{len(body)}")
        else:
            request.send_response(200)
        part = body[first : last + 1]
        request.send_header("Content-Length", str(len(part)))
        request.end_headers()
        self.send(request, key, part)

    def send(self, request: BaseHTTPRequestHandler, key: str, part: bytes) -> None:
        """Write the response body and count it against the device that asked."""
        try:
            request.wfile.write(part)
        except (BrokenPipeError, ConnectionResetError):
            return  # the device gave up (timeout); it will resume with Range
        agent = request.headers.get("User-Agent", "")
        device = agent.split("/", 1)[1] if agent.startswith("edgeloop-agent/") else agent
        self.log.add(device, key, len(part))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _refuse(request: BaseHTTPRequestHandler, status: int) -> None:
    """An error status with an empty body; a device that gave up meanwhile is no error."""
    try:
        request.send_response(status)
        request.send_header("Content-Length", "0")
        request.end_headers()
    except (BrokenPipeError, ConnectionResetError):
        return


def _request_handler(cdn: LocalCdn) -> type[BaseHTTPRequestHandler]:
    class Request(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:
            return

        def do_GET(self) -> None:
            cdn.serve(self)

    return Request
