"""Uploads: a bounded on-disk queue of batches, sent through presigned POSTs.

A batch is written to disk before anything is sent, so a network drop or a
restart loses nothing. When the queue is full the oldest batch is dropped and
counted (the count is persisted and reported), never silently.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge.backoff import Backoff
from edge.errors import UploadFailed
from edge.store import write_atomic
from edgeloop.contract import UploadAnswer, UploadRefusal, new_batch_id

log = logging.getLogger(__name__)


def encode_batch(X: npt.NDArray[np.float32], y: npt.NDArray[np.int64] | None) -> bytes:
    buffer = io.BytesIO()
    if y is None:
        np.savez(buffer, X=X)
    else:
        np.savez(buffer, X=X, y=y)
    return buffer.getvalue()


class UploadQueue:
    def __init__(self, root: Path, max_batches: int) -> None:
        self.root = root
        self.max_batches = max_batches
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._dropped_path = root / "dropped.json"

    @property
    def dropped(self) -> int:
        try:
            return int(json.loads(self._dropped_path.read_bytes())["dropped"])
        except (OSError, ValueError, KeyError):
            return 0

    def _files(self) -> list[Path]:
        return sorted(p for p in self.root.glob("*.npz"))

    def __len__(self) -> int:
        with self._lock:
            return len(self._files())

    def put(self, data: bytes) -> None:
        with self._lock:
            # Epoch microseconds and a random suffix, the shape of the cloud's upload
            # ids, so keys sort by time whoever named them.
            name = f"{new_batch_id()}.npz"
            write_atomic(self.root / name, data)
            files = self._files()
            log.info(
                "event=upload_queued batch=%s bytes=%d depth=%d", name[:-4], len(data), len(files)
            )
            excess = len(files) - self.max_batches
            if excess > 0:
                for old in files[:excess]:
                    old.unlink(missing_ok=True)
                write_atomic(
                    self._dropped_path, json.dumps({"dropped": self.dropped + excess}).encode()
                )
                log.warning(
                    "event=upload_dropped batches=%d reason='queue full (%d batches)'",
                    excess,
                    self.max_batches,
                )
            self._ready.notify_all()

    def oldest(self, timeout: float) -> Path | None:
        with self._lock:
            if not self._files():
                self._ready.wait(timeout)
            files = self._files()
            return files[0] if files else None

    def remove(self, path: Path) -> None:
        with self._lock:
            path.unlink(missing_ok=True)


class UrlSource(Protocol):
    def request_upload_url(
        self, model: str, content_type: str, size: int, timeout: float, batch_id: str | None = None
    ) -> UploadAnswer:
        """Ask the cloud for a presigned POST: the answer (url, fields), or UploadFailed."""
        ...


def post_multipart(url: str, fields: dict[str, str], data: bytes, timeout: float) -> int:
    boundary = f"edgeloop-{secrets.token_hex(12)}"
    parts = []
    for name, value in fields.items():
        parts.append(
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="batch.npz"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
    )
    body = b"".join(parts) + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return int(response.status)


UPLOAD_RETRY_MAX_SECONDS = 120.0


@dataclass
class Uploader:
    queue: UploadQueue
    urls: UrlSource
    model: str
    retry_seconds: float
    timeout: float = 10.0
    sent: int = 0
    on_sent: Callable[[int], None] | None = None

    def send_one(self, path: Path) -> None:
        data = path.read_bytes()
        # The queue file's name is the batch id: every attempt at this batch asks
        # for the same key, so a retry after a lost response cannot upload it twice.
        answer = self.urls.request_upload_url(
            self.model, "application/x-npz", len(data), self.timeout, batch_id=path.stem
        )
        if isinstance(answer, UploadRefusal):
            raise UploadFailed(f"upload refused ({answer.code}): {answer.message}")
        try:
            status = post_multipart(answer.url, answer.fields, data, self.timeout)
        except (urllib.error.URLError, OSError) as exc:
            raise UploadFailed(f"POST to the presigned URL failed: {exc}") from exc
        if status not in (200, 201, 204):
            raise UploadFailed(f"POST to the presigned URL answered {status}")
        self.queue.remove(path)
        self.sent += 1
        log.info("event=upload_sent batch=%s bytes=%d", path.stem, len(data))
        if self.on_sent is not None:
            self.on_sent(self.sent)

    def run(self, stop: threading.Event) -> None:
        # A thousand devices whose uploads failed together (a broker restart, a
        # slow presign) must not retry together: the pause grows, with jitter.
        backoff = Backoff(self.retry_seconds, max(self.retry_seconds, UPLOAD_RETRY_MAX_SECONDS))
        while not stop.is_set():
            path = self.queue.oldest(timeout=1.0)
            if path is None:
                continue
            try:
                self.send_one(path)
            except (UploadFailed, OSError) as exc:
                # Kept on disk; try again after a pause (the network may be down).
                log.info("event=upload_deferred batch=%s reason=%r", path.stem, str(exc))
                stop.wait(backoff.next())
            except Exception:
                # Not a network failure: say so, keep the batch, and keep the thread.
                log.exception("event=upload_crashed batch=%s", path.stem)
                stop.wait(backoff.next())
            else:
                backoff.reset()
