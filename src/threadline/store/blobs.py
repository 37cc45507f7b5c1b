"""Blob stores for files' bytes: a local directory (the default) or an S3-compatible bucket.

Both stream: uploads are written a buffer at a time as they arrive and downloads are read a chunk
at a time, so a file's size never shows in the server's memory. ``open_blob_store(settings)``
picks one from ``THREADLINE_FILE_STORE``. Blocking calls (file I/O, boto3) run on threads.

A local upload is written to ``<key>.partial`` under an exclusive ``flock`` the kernel drops when
its process dies, so ``remove_abandoned`` (run at start-up) can tell the half-written files of a
killed server from uploads another live process is writing into the same directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from threadline.config import Settings
from threadline.domain.ports.storage import BlobNotFoundError, BlobStore

log = logging.getLogger(__name__)

PARTIAL = ".partial"
"""The suffix of a file still being uploaded."""

CHUNK = 1024 * 1024
"""Bytes per read when serving a file, and per write when storing one locally."""


class LocalBlobStore:
    """Blobs as files under ``root``, spread over 256 subdirectories by the key's last characters."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not key or "/" in key or "\\" in key or key.startswith("."):
            raise ValueError(f"not a blob key: {key!r}")
        return self.root / key[-2:] / key

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        path = self._path(key)
        # Written under a temporary name and renamed when complete: a reader never sees half a file.
        partial = path.with_name(path.name + PARTIAL)
        handle = await asyncio.to_thread(_create, partial)
        size = 0
        try:
            pending: list[bytes] = []
            waiting = 0
            async for chunk in chunks:
                pending.append(chunk)
                size += len(chunk)
                waiting += len(chunk)
                if waiting >= CHUNK:
                    await asyncio.to_thread(handle.write, b"".join(pending))
                    pending, waiting = [], 0
            await asyncio.to_thread(_finish, handle, b"".join(pending), partial, path)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(_abandon, handle, partial))
            raise
        return size

    async def get(self, key: str) -> AsyncIterator[bytes]:
        try:
            handle = await asyncio.to_thread(open, self._path(key), "rb")
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None
        return _read_chunks(handle)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).exists)

    async def remove_abandoned(self) -> int:
        return await asyncio.to_thread(_remove_abandoned, self.root)

    async def aclose(self) -> None:
        return None


def _create(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("wb")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
    return handle


def _remove_abandoned(root: Path) -> int:
    """Delete the ``.partial`` files no live process holds locked: uploads a killed server left."""
    removed = 0
    for partial in root.glob(f"*/*{PARTIAL}"):
        try:
            with partial.open("rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                stat = os.fstat(handle.fileno())
                if stat.st_size == 0 and time.time() - stat.st_mtime < 60:
                    continue  # just created: its writer may not hold its lock yet
                partial.unlink()
                removed += 1
        except (BlockingIOError, FileNotFoundError):
            continue  # being written by a live process, or finished meanwhile
    if removed:
        log.info("removed %d unfinished uploads left by a stopped server", removed)
    return removed


def _finish(handle: BinaryIO, tail: bytes, partial: Path, path: Path) -> None:
    with handle:
        handle.write(tail)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)


def _abandon(handle: BinaryIO, partial: Path) -> None:
    handle.close()
    partial.unlink(missing_ok=True)


async def _read_chunks(handle: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            yield chunk
    finally:
        handle.close()


PART = 8 * 1024 * 1024
"""Bytes per part of an S3 multipart upload (S3 wants at least 5 MiB for all parts but the last)."""


class S3BlobStore:
    """Blobs as objects in an S3-compatible bucket; files larger than one part go up in parts."""

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None) -> None:
        import boto3

        self.bucket = bucket
        self.prefix = prefix
        # Credentials and region come from the usual AWS_* variables and files; clients are thread-safe.
        self.client: Any = boto3.session.Session().client("s3", endpoint_url=endpoint_url or None)

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        name = self._key(key)
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        buffer = bytearray()
        size = 0
        try:
            async for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                if len(buffer) >= PART:
                    if upload_id is None:
                        created = await asyncio.to_thread(
                            self.client.create_multipart_upload, Bucket=self.bucket, Key=name
                        )
                        upload_id = created["UploadId"]
                    parts.append(await self._upload_part(name, upload_id, len(parts) + 1, bytes(buffer)))
                    buffer = bytearray()
            if upload_id is None:
                await asyncio.to_thread(
                    self.client.put_object, Bucket=self.bucket, Key=name, Body=bytes(buffer)
                )
                return size
            if buffer:
                parts.append(await self._upload_part(name, upload_id, len(parts) + 1, bytes(buffer)))
            await asyncio.to_thread(
                self.client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            if upload_id is not None:
                await asyncio.shield(
                    asyncio.to_thread(
                        self.client.abort_multipart_upload, Bucket=self.bucket, Key=name, UploadId=upload_id
                    )
                )
            raise
        return size

    async def _upload_part(self, name: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        answer = await asyncio.to_thread(
            self.client.upload_part,
            Bucket=self.bucket,
            Key=name,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
        )
        return {"ETag": answer["ETag"], "PartNumber": number}

    async def get(self, key: str) -> AsyncIterator[bytes]:
        try:
            answer = await asyncio.to_thread(self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            raise BlobNotFoundError(key) from None
        return _stream_body(answer["Body"])

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=self._key(key))

    async def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            await asyncio.to_thread(self.client.head_object, Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    async def remove_abandoned(self) -> int:
        # An interrupted multipart upload is not an object: the bucket's lifecycle rule
        # (AbortIncompleteMultipartUpload) removes its parts.
        return 0

    async def aclose(self) -> None:
        await asyncio.to_thread(self.client.close)


async def _stream_body(body: Any) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(body.read, CHUNK):
            yield chunk
    finally:
        with contextlib.suppress(Exception):
            body.close()


def open_blob_store(settings: Settings) -> BlobStore:
    if settings.file_store == "local":
        return LocalBlobStore(settings.effective_file_dir)
    if settings.file_store == "s3":
        if not settings.s3_bucket:
            raise ValueError("THREADLINE_FILE_STORE=s3 needs THREADLINE_S3_BUCKET")
        return S3BlobStore(
            settings.s3_bucket, prefix=settings.s3_prefix, endpoint_url=settings.s3_endpoint_url or None
        )
    raise ValueError(f"THREADLINE_FILE_STORE: expected 'local' or 's3', got {settings.file_store!r}")
