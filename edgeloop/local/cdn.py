"""The CDN stand-in: serves `models/` from the artifact bucket over HTTP, with Range.

It also counts the bytes it serves to each device (by User-Agent), which is
what the demo reports as bytes shipped.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from botocore.exceptions import ClientError


@dataclass
class Shipment:
    device: str
    path: str
    bytes: int

    @property
    def kind(self) -> str:
        return "full" if self.path.endswith("model.tflite") else "patch"


@dataclass
class CdnLog:
    shipments: list[Shipment] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, device: str, path: str, size: int) -> None:
        with self.lock:
            self.shipments.append(Shipment(device, path, size))

    def bytes_by_device(self) -> dict[str, dict[str, int]]:
        totals: dict[str, dict[str, int]] = defaultdict(lambda: {"full": 0, "patch": 0})
        with self.lock:
            for s in self.shipments:
                totals[s.device][s.kind] += s.bytes
        return dict(totals)


_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class _ObjectCache:
    """Artifacts live under versioned paths and never change once published,
    so, like CloudFront with a long TTL, each is read from the bucket once.
    Manifests (`.json`) are always read through, because a rollback rewrites them.
    """

    def __init__(self, s3: Any | None, bucket: str) -> None:
        self._s3, self._bucket = s3, bucket
        self._objects: dict[str, bytes] = {}
        self._fetching: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def prime(self, key: str, body: bytes) -> None:
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
            if self._s3 is None:
                raise KeyError(key)  # no origin: only what was primed exists
            body: bytes = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
            if not key.endswith(".json"):
                with self._lock:
                    self._objects[key] = body
            return body


class LocalCdn:
    def __init__(self, s3: Any | None, bucket: str) -> None:
        self.log = CdnLog()
        self._cache = cache = _ObjectCache(s3, bucket)
        log = self.log

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                return

            def do_GET(self) -> None:
                key = self.path.lstrip("/")
                if not key.startswith("models/") or ".." in key.split("/"):
                    self.send_error(403)
                    return
                try:
                    body = cache.get(key)
                except ClientError as exc:
                    code = exc.response["Error"]["Code"]
                    self.send_error(404 if code in ("NoSuchKey", "404") else 502)
                    return
                except KeyError:
                    self.send_error(404)
                    return
                match = _RANGE.fullmatch(self.headers.get("Range") or "")
                first, last = 0, len(body) - 1
                if match:
                    first = int(match.group(1))
                    if match.group(2):
                        last = min(last, int(match.group(2)))
                    if first > last:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {first}-{last}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[first : last + 1]
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                try:
                    self.wfile.write(part)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the device gave up (timeout); it will resume with Range
                agent = self.headers.get("User-Agent", "")
                device = agent.split("/", 1)[1] if agent.startswith("edgeloop-agent/") else agent
                log.add(device, key, len(part))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="cdn", daemon=True)
        self._thread.start()

    @classmethod
    def from_files(cls, files: dict[str, bytes]) -> LocalCdn:
        """A CDN with no bucket behind it, serving exactly `files` (benchmarks)."""
        cdn = cls(None, "")
        for key, body in files.items():
            cdn.prime(key, body)
        return cdn

    def prime(self, key: str, body: bytes) -> None:
        """Put a just-published artifact in the cache, as an edge cache warmed at
        publish time holds it; the soak does this because moto cannot also serve
        a thousand uploads at once."""
        self._cache.prime(key, body)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
