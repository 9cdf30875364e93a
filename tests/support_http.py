"""A real HTTP server for artifacts (the CDN stand-in), with Range and fault injection."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fault:
    stall_after: int | None = None  # send this many bytes, then hang
    extra: bytes = b""  # bytes sent past the real file (an endless or padded body)
    drop_after: int | None = None  # close the connection after this many bytes, once
    ignore_range: bool = False


@dataclass
class ArtifactServer:
    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    base_url: str = ""
    released: threading.Event = field(default_factory=threading.Event)

    def served(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)


def _handler(state: ArtifactServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:
            return

        def do_GET(self) -> None:
            path = self.path.lstrip("/")
            range_header = self.headers.get("Range")
            state.requests.append((path, range_header))
            data = state.files.get(path)
            if data is None:
                self.send_error(404)
                return
            fault = state.faults.get(path, Fault())
            body = data + fault.extra
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
            if match and not fault.ignore_range:
                start = int(match.group(1))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            chunk = body[start:]
            self.send_header("Content-Length", str(len(chunk)))
            self.end_headers()
            if fault.drop_after is not None:
                self.wfile.write(chunk[: fault.drop_after])
                fault.drop_after = None  # once
                self.close_connection = True
                return
            if fault.stall_after is not None:
                self.wfile.write(chunk[: fault.stall_after])
                self.wfile.flush()
                state.released.wait(30)
                return
            self.wfile.write(chunk)

    return Handler


@contextmanager
def artifact_server() -> Iterator[ArtifactServer]:
    state = ArtifactServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.released.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
        time.sleep(0)
