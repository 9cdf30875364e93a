"""The CDN stand-in over in-memory files, for the agent's tests and the benchmarks.

It is the local runtime's LocalCdn with files for an origin; `ArtifactServer`
adds what only tests need: a log of every request and injected faults.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from edgeloop.local.cdn import LocalCdn


@dataclass
class FilesOrigin:
    """An origin holding exactly `files`, read on every request (no edge cache)."""

    files: dict[str, bytes] = field(default_factory=dict)

    def get(self, key: str) -> bytes:
        return self.files[key]


@dataclass
class Fault:
    stall_after: int | None = None  # send this many bytes, then hang
    extra: bytes = b""  # bytes sent past the real file (an endless or padded body)
    drop_after: int | None = None  # close the connection after this many bytes, once
    ignore_range: bool = False
    trickle_seconds: float | None = None  # one byte, then this long, then the next...
    redirect_to: str | None = None  # answer 302 with this Location instead of the file


@dataclass
class _FaultyOrigin:
    server: ArtifactServer

    def get(self, key: str) -> bytes:
        fault = self.server.faults.get(key, Fault())
        return self.server.files[key] + fault.extra


class ArtifactServer(LocalCdn):
    """A CDN whose files, and how it misbehaves serving each, a test sets as it goes."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, Fault] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.released = threading.Event()  # ends every stall
        super().__init__(_FaultyOrigin(self))

    def served(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.lstrip("/")
        self.requests.append((path, request.headers.get("Range")))
        fault = self.faults.get(path, Fault())
        if fault.redirect_to is not None:
            request.send_response(302)
            request.send_header("Location", fault.redirect_to)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        if fault.ignore_range:
            del request.headers["Range"]  # a server that ignores Range answers as if none came
        super().serve(request)

    def send(self, request: BaseHTTPRequestHandler, key: str, part: bytes) -> None:
        fault = self.faults.get(key, Fault())
        if fault.drop_after is not None:
            request.wfile.write(part[: fault.drop_after])
            fault.drop_after = None  # once
            request.close_connection = True
            return
        if fault.trickle_seconds is not None:
            for i in range(len(part)):
                request.wfile.write(part[i : i + 1])
                request.wfile.flush()
                if not self.released.is_set():
                    self.released.wait(fault.trickle_seconds)
            return
        if fault.stall_after is not None:
            request.wfile.write(part[: fault.stall_after])
            request.wfile.flush()
            self.released.wait(30)
            return
        super().send(request, key, part)


@contextmanager
def artifact_server() -> Iterator[ArtifactServer]:
    server = ArtifactServer()
    try:
        yield server
    finally:
        server.released.set()
        server.stop()


def cdn_of_files(files: dict[str, bytes]) -> LocalCdn:
    """A CDN with no bucket behind it, serving exactly `files` (benchmarks)."""
    return LocalCdn(FilesOrigin(files))
