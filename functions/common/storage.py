"""Object storage behind a small interface, with one S3 implementation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError


class ObjectExists(Exception):
    """A write that must not overwrite found the key already there (versions are immutable)."""


class ObjectMissing(KeyError):
    """The key is not in the bucket."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


class ObjectStore(ABC):
    @abstractmethod
    def get(self, bucket: str, key: str) -> bytes: ...

    @abstractmethod
    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        immutable: bool = False,
    ) -> None:
        """Write an object; with `immutable`, refuse to replace an existing one."""

    @abstractmethod
    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]: ...

    @abstractmethod
    def move(self, bucket: str, key: str, to_key: str) -> None: ...


class S3ObjectStore(ObjectStore):
    def __init__(self, s3_client: Any) -> None:
        self._s3 = s3_client

    def get(self, bucket: str, key: str) -> bytes:
        try:
            body: bytes = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                raise ObjectMissing(f"s3://{bucket}/{key}") from exc
            raise
        return body

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        immutable: bool = False,
    ) -> None:
        extra = {"IfNoneMatch": "*"} if immutable else {}
        try:
            self._s3.put_object(
                Bucket=bucket, Key=key, Body=data, ContentType=content_type, **extra
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("PreconditionFailed", "412"):
                raise ObjectExists(
                    f"s3://{bucket}/{key} exists and versions are immutable"
                ) from exc
            raise

    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"], int(item["Size"]), item["ETag"].strip('"'))

    def move(self, bucket: str, key: str, to_key: str) -> None:
        self._s3.copy_object(Bucket=bucket, Key=to_key, CopySource={"Bucket": bucket, "Key": key})
        self._s3.delete_object(Bucket=bucket, Key=key)
