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


class LocalCdn:
    def __init__(self, s3: Any, bucket: str) -> None:
        self.log = CdnLog()
        s3_client, log = s3, self.log

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                return

            def do_GET(self) -> None:
                key = self.path.lstrip("/")
                if not key.startswith("models/") or ".." in key.split("/"):
                    self.send_error(403)
                    return
                kwargs = {"Bucket": bucket, "Key": key}
                requested = self.headers.get("Range")
                if requested and re.fullmatch(r"bytes=\d+-\d*", requested):
                    kwargs["Range"] = requested
                try:
                    response = s3_client.get_object(**kwargs)
                except ClientError as exc:
                    code = exc.response["Error"]["Code"]
                    self.send_error(404 if code in ("NoSuchKey", "404") else 502)
                    return
                body = response["Body"].read()
                self.send_response(206 if "ContentRange" in response else 200)
                if "ContentRange" in response:
                    self.send_header("Content-Range", response["ContentRange"])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                agent = self.headers.get("User-Agent", "")
                device = agent.split("/", 1)[1] if agent.startswith("edgeloop-agent/") else agent
                log.add(device, key, len(body))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="cdn", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
