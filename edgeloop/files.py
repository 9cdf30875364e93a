"""Writing a secret to disk (shared by cloud and device): owner-only from its first byte."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes | str) -> None:
    """Write `data` readable and writable by its owner only (0600), never readable by
    others even briefly (the mode is set as the file is created, not after), and
    flushed to the disk: a private key lost to a power cut is an identity lost."""
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())
