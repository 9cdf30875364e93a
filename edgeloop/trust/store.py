"""Where the repository's files live: a few bytes by key, in S3 or in a directory.

The repository needs nothing else, so the same code signs into the artifact
bucket from a function and into a local directory from the CLI or a test.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

# Versioned metadata and hash-prefixed targets never change once written, so a
# CDN may keep them forever. timestamp.json is the one file it must re-check on
# every request: a nudge goes out right after a publish, and a device that read a
# cached timestamp then would find nothing new until its next timer.
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "no-cache"


def mutable(key: str) -> bool:
    """The keys a cache must re-check: the timestamp and roots still collecting signatures."""
    return key.endswith("/timestamp.json") or "/pending/" in key


class KeyExists(Exception):
    """A create-only write found the key already written: another writer was first."""


class ByteStore(Protocol):
    def get(self, key: str) -> bytes | None:
        """The object's bytes, None when there is none."""
        ...

    def put(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        """Write `data` at `key`; with `create_only`, raise KeyExists instead of replacing."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Every key starting with `prefix`, sorted."""
        ...

    def delete(self, key: str) -> None:
        """Remove `key`; removing what is not there is not an error."""
        ...


def cache_control(key: str) -> str:
    return SHORT if mutable(key) else IMMUTABLE


class DirectoryStore:
    """Keys as relative paths under one directory (the CLI's `--dir`, tests)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"key {key!r} leaves the store")
        return self.root / key

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A reader never sees half a file: write beside it, then rename over it.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        if not create_only:
            os.replace(tmp, path)
            return
        # link() fails when the name exists: the one atomic "create if absent".
        try:
            os.link(tmp, path)
        except FileExistsError as exc:
            raise KeyExists(key) from exc
        finally:
            os.unlink(tmp)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        if not self.root.exists():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and "/.tmp-" not in k)


class S3Store:
    """Keys under `prefix` in one bucket, through a boto3 S3 client the caller made."""

    def __init__(self, s3: Any, bucket: str, prefix: str = "") -> None:
        self._s3 = s3
        self.bucket = bucket
        self.prefix = prefix

    def get(self, key: str) -> bytes | None:
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except self._s3.exceptions.NoSuchKey:
            return None
        data: bytes = response["Body"].read()
        return data

    def put(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        try:
            self._s3.put_object(
                Bucket=self.bucket,
                Key=self.prefix + key,
                Body=data,
                ContentType=(
                    "application/json" if key.endswith(".json") else "application/octet-stream"
                ),
                CacheControl=cache_control(key),
                **({"IfNoneMatch": "*"} if create_only else {}),
            )
        except self._s3.exceptions.ClientError as exc:
            # 412: the key exists; 409: a concurrent conditional write to it is in flight.
            if exc.response.get("Error", {}).get("Code") in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
            ):
                raise KeyExists(key) from exc
            raise

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=self.prefix + key)

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        for page in pages:
            keys.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", []))
        return sorted(keys)
