"""Files: uploads streamed into the blob store, their descriptions, and the references to them.

``FileService`` backs ``/v1/files``: an upload arrives as form fields whose file part is a stream of
chunks, written straight to the blob store while it is counted against the size limit, and
described in the database only once everything checked out — a refused upload leaves neither a row
nor a blob. It also refuses the file ids a request names that do not exist (``check_references``; the
commands of ``domain/commands.py`` say which they name). The functions below it keep threads' and
assistants' tool resources in step with attachments and deletions.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import mimetypes
import re
import unicodedata
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from threadline.domain.clock import now
from threadline.domain.entities import DEFAULT_PROJECT, File, ListQuery, Message, Page
from threadline.domain.ports.storage import BlobNotFoundError, BlobStore, FileRepository
from threadline.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError, describe_size
from threadline.ids import new_id

log = logging.getLogger(__name__)

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
"""What ``purpose`` an upload may name (the spec's ``CreateFileRequest``)."""

_JSONL_PURPOSES = frozenset({"batch", "fine-tune", "evals"})
_IMAGE_SUFFIXES = (".png", ".jpeg", ".jpg", ".gif", ".webp")
_FIELD_LIMIT = 1024
"""Bytes a plain form field (``purpose``, ``expires_after[...]``) may hold."""
_FILENAME_LIMIT = 255
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_FILE_ID = re.compile(r"file-[A-Za-z0-9]{1,64}")
"""What every file id made here looks like (``ids.new_id("file")``)."""
_EXPIRY_SECONDS = (3600, 2_592_000)
# Types ``mimetypes`` does not know everywhere.
_EXTRA_TYPES = {".jsonl": "application/jsonl", ".md": "text/markdown", ".webp": "image/webp"}


@dataclass(slots=True)
class UploadField:
    """One part of a multipart upload. ``filename`` is ``None`` for plain fields; ``chunks`` must be
    read (or abandoned) before the next part is asked for."""

    name: str
    filename: str | None
    content_type: str | None
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file id a request names, and where (``attachments[0].file_id``), for the error message."""

    file_id: str
    param: str


def too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"The file is larger than the {describe_size(limit)} allowed.", param="file")


def check_filename(filename: str) -> str:
    """The upload's filename if it is a plain name: no directories, no control characters."""
    if not filename.strip():
        raise InvalidRequestError("The uploaded file must have a filename.", param="file")
    if len(filename.encode()) > _FILENAME_LIMIT:
        raise InvalidRequestError(f"The filename is longer than {_FILENAME_LIMIT} bytes.", param="file")
    if "/" in filename or "\\" in filename or filename in (".", ".."):
        raise InvalidRequestError(
            f"Invalid filename {filename[:100]!r}: give the file's name only, without a directory.",
            param="file",
        )
    if any(unicodedata.category(ch) == "Cc" for ch in filename):
        raise InvalidRequestError("The filename must not contain control characters.", param="file")
    return filename


def content_type_for(filename: str, declared: str | None) -> str:
    """The type files are served with: from the name, else what the client declared, else binary."""
    suffix = PurePosixPath(filename).suffix.lower()
    guessed = _EXTRA_TYPES.get(suffix) or mimetypes.guess_type(filename, strict=False)[0]
    if guessed:
        return guessed
    declared = (declared or "").split(";")[0].strip().lower()
    if _MEDIA_TYPE.fullmatch(declared) and declared != "application/octet-stream":
        return declared
    return "application/octet-stream"


def check_purpose(purpose: str) -> None:
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequestError(
            f"Invalid value for 'purpose': {purpose[:64]!r}. Supported values are: "
            + ", ".join(f"'{p}'" for p in UPLOAD_PURPOSES)
            + ".",
            param="purpose",
        )


def check_type(purpose: str, filename: str) -> None:
    """Refuse a file the purpose cannot use, as OpenAI did: JSONL for batch and fine-tuning, images
    for vision. Assistants' files are checked by the tools that read them."""
    suffix = PurePosixPath(filename).suffix.lower()
    if purpose in _JSONL_PURPOSES and suffix != ".jsonl":
        raise InvalidRequestError(
            f"Invalid file format for purpose '{purpose}': expected a .jsonl file, got {filename[:100]!r}.",
            param="file",
        )
    if purpose == "vision" and suffix not in _IMAGE_SUFFIXES:
        raise InvalidRequestError(
            f"Invalid file format for purpose 'vision': expected an image ({', '.join(_IMAGE_SUFFIXES)}), "
            f"got {filename[:100]!r}.",
            param="file",
        )


async def _limited(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """The chunks, refused with a 413 as soon as they add up to more than ``limit`` bytes."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > limit:
            raise too_large(limit)
        yield chunk


async def _read_field(field: UploadField) -> str:
    data = b""
    async for chunk in field.chunks:
        data += chunk
        if len(data) > _FIELD_LIMIT:
            raise InvalidRequestError(f"The field '{field.name[:64]}' is too long.", param=field.name[:64])
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise InvalidRequestError(
            f"The field '{field.name[:64]}' is not valid UTF-8.", param=field.name[:64]
        ) from None


@dataclass(slots=True)
class _Upload:
    """What an upload's fields said, gathered as they arrive (in any order)."""

    purpose: str | None = None
    anchor: str | None = None
    seconds: str | None = None
    filename: str | None = None
    content_type: str = "application/octet-stream"
    size: int | None = None


def _expiry_object(text: str) -> tuple[str | None, str | None]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    anchor = value.get("anchor") if isinstance(value, dict) else None
    seconds = value.get("seconds") if isinstance(value, dict) else None
    # Both are required: an object without them must not pass as "no expiry".
    if not isinstance(anchor, str) or not isinstance(seconds, int) or isinstance(seconds, bool):
        raise InvalidRequestError(
            "Invalid value for 'expires_after': expected an object with 'anchor' and 'seconds'.",
            param="expires_after",
        )
    return anchor, str(seconds)


def _expires_at(upload: _Upload, created_at: int) -> int | None:
    if upload.anchor is None and upload.seconds is None:
        return None
    if upload.anchor != "created_at":
        raise InvalidRequestError(
            "Invalid value for 'expires_after.anchor': the only anchor is 'created_at'.",
            param="expires_after.anchor",
        )
    low, high = _EXPIRY_SECONDS
    try:
        seconds = int(upload.seconds or "")
    except ValueError:
        seconds = -1
    if not low <= seconds <= high:
        raise InvalidRequestError(
            f"Invalid value for 'expires_after.seconds': expected a number of seconds from {low} to {high}.",
            param="expires_after.seconds",
        )
    return created_at + seconds


class FileService:
    def __init__(
        self,
        files: FileRepository,
        blobs: BlobStore,
        *,
        max_bytes: int,
        clock: Callable[[], int] = now,
        project_id: str = DEFAULT_PROJECT,
    ) -> None:
        self.files = files
        self.blobs = blobs
        self.max_bytes = max_bytes
        self.clock = clock
        self.project_id = project_id
        """Files are made in, and found only in, this project."""

    def for_project(self, project_id: str) -> FileService:
        scoped = copy.copy(self)
        scoped.project_id = project_id
        return scoped

    async def create_file(self, fields: AsyncIterator[UploadField]) -> File:
        file_id = new_id("file")
        upload = _Upload()
        try:
            async for field in fields:
                await self._take(field, file_id, upload)
            file = self._described(file_id, upload)
            await self.files.insert_file(file)
        except BaseException:
            if upload.size is not None or upload.filename is not None:
                # Whatever went wrong (a bad field, the client gone, a cancelled request), no blob
                # may outlive the upload that wrote it; shielded so a cancellation cannot skip it.
                await asyncio.shield(self._discard(file_id))
            raise
        return file

    async def _take(self, field: UploadField, file_id: str, upload: _Upload) -> None:
        if field.name == "file" and field.filename is not None:
            if upload.filename is not None:
                raise InvalidRequestError("Upload one file per request.", param="file")
            upload.filename = check_filename(field.filename)
            if upload.purpose is not None:
                # Sent first (as the SDK does): refuse a wrong purpose or type before storing a byte.
                check_purpose(upload.purpose)
                check_type(upload.purpose, upload.filename)
            upload.content_type = content_type_for(upload.filename, field.content_type)
            upload.size = await self.blobs.put(file_id, _limited(field.chunks, self.max_bytes))
        elif field.name == "file":
            raise InvalidRequestError("The 'file' field must be a file, sent with a filename.", param="file")
        elif field.name == "purpose":
            upload.purpose = await _read_field(field)
        elif field.name == "expires_after[anchor]":
            upload.anchor = await _read_field(field)
        elif field.name == "expires_after[seconds]":
            upload.seconds = await _read_field(field)
        elif field.name == "expires_after":
            # Some clients send the object as one JSON part rather than bracketed fields.
            upload.anchor, upload.seconds = _expiry_object(await _read_field(field))
        else:
            raise InvalidRequestError(
                f"Unrecognized request argument supplied: {field.name[:64]}", param=field.name[:64]
            )

    def _described(self, file_id: str, upload: _Upload) -> File:
        if upload.purpose is None:
            raise InvalidRequestError("Missing required parameter: 'purpose'.", param="purpose")
        check_purpose(upload.purpose)
        if upload.filename is None or upload.size is None:
            raise InvalidRequestError("Missing required parameter: 'file'.", param="file")
        if upload.size == 0:
            raise InvalidRequestError("The uploaded file is empty.", param="file")
        check_type(upload.purpose, upload.filename)
        created_at = self.clock()
        return File(
            id=file_id,
            created_at=created_at,
            bytes=upload.size,
            filename=upload.filename,
            purpose=upload.purpose,
            content_type=upload.content_type,
            expires_at=_expires_at(upload, created_at),
            project_id=self.project_id,
        )

    async def _discard(self, file_id: str) -> None:
        try:
            await self.blobs.delete(file_id)
        except Exception:
            log.exception("could not remove the blob of refused upload %s", file_id)

    async def save_output(self, filename: str, data: bytes, content_type: str) -> File:
        """Keep bytes a tool made (a chart, a file the code wrote) as a file of this project, with
        purpose ``assistants_output``, as OpenAI's code interpreter did."""
        file_id = new_id("file")

        async def chunks() -> AsyncIterator[bytes]:
            yield data

        size = await self.blobs.put(file_id, chunks())
        file = File(
            id=file_id,
            created_at=self.clock(),
            bytes=size,
            filename=check_filename(filename),
            purpose="assistants_output",
            content_type=content_type,
            project_id=self.project_id,
        )
        try:
            await self.files.insert_file(file)
        except BaseException:
            await asyncio.shield(self._discard(file_id))
            raise
        return file

    async def read_bytes(self, file_id: str, limit: int) -> tuple[File, bytes]:
        """A file's bytes, refused past ``limit`` (a tool copies files into a bounded sandbox)."""
        file, chunks = await self.file_content(file_id)
        if file.bytes > limit:
            raise InvalidRequestError(f"The file {file.filename} is larger than {limit} bytes.")
        return file, b"".join([chunk async for chunk in chunks])

    async def get_file(self, file_id: str) -> File:
        file = await self.files.get_file(file_id, self.project_id) if _FILE_ID.fullmatch(file_id) else None
        if file is None:
            raise NotFoundError(f"No such File object: {file_id}", param="id")
        return file

    async def list_files(self, query: ListQuery, purpose: str | None) -> Page[File]:
        return await self.files.list_files(query, purpose, self.project_id)

    async def file_content(self, file_id: str) -> tuple[File, AsyncIterator[bytes]]:
        file = await self.get_file(file_id)
        try:
            return file, await self.blobs.get(file_id)
        except BlobNotFoundError:
            log.error("file %s has a row but no blob", file_id)
            raise NotFoundError(f"No such File object: {file_id}", param="id") from None

    async def delete_file(self, file_id: str) -> None:
        """Delete the file, and take it out of every assistant's and thread's tool resources."""
        if not _FILE_ID.fullmatch(file_id) or not await self.files.delete_file(file_id, self.project_id):
            raise NotFoundError(f"No such File object: {file_id}", param="id")
        # After the row: a blob left behind by a failure here is unreachable, never a dangling row.
        await self._discard(file_id)

    async def check_references(self, refs: Sequence[FileRef]) -> None:
        """Refuse a request naming a file that does not exist, with OpenAI's 400."""
        for ref in refs:
            if not ref.file_id.startswith("file-"):
                raise InvalidRequestError(
                    f"Invalid '{ref.param}': '{ref.file_id[:100]}'. Expected an ID that begins with 'file'.",
                    param=ref.param,
                )
        # Ids we could never have made are not looked up (PostgreSQL refuses text with NUL in it).
        plausible = {ref.file_id for ref in refs if _FILE_ID.fullmatch(ref.file_id)}
        found = await self.files.existing_file_ids(plausible, self.project_id) if plausible else set()
        for ref in refs:
            if ref.file_id not in found:
                raise InvalidRequestError(f"No file found with id '{ref.file_id[:100]}'.", param=ref.param)


IMAGE_MAX_BYTES = 20 * 1024 * 1024
"""The largest uploaded image sent to a model (OpenAI's limit for an image in a request)."""
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def image_type(data: bytes) -> str | None:
    """The image type ``data`` is, by its first bytes (never by the name a client gave it)."""
    for magic, kind in _IMAGE_MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


class UploadedImages:
    """Uploaded image files as ``data:`` URLs, for the models that see (``domain.prompt_messages.ImageSource``)."""

    def __init__(self, files: FileService, max_bytes: int = IMAGE_MAX_BYTES) -> None:
        self.files = files
        self.max_bytes = max_bytes

    async def data_url(self, file_id: str, project_id: str) -> str | None:
        try:
            _, data = await self.files.for_project(project_id).read_bytes(file_id, self.max_bytes)
        except (NotFoundError, InvalidRequestError) as exc:
            log.info("image file %s is not sent to the model: %s", file_id, exc.message)
            return None
        kind = image_type(data)
        if kind is None:
            log.info("file %s is not a PNG, JPEG, GIF or WebP image: not sent to the model as one", file_id)
            return None
        return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _attached_for(tool_type: str, messages: Sequence[Message]) -> list[str]:
    found: dict[str, None] = {}
    for message in messages:
        for attachment in message.attachments or []:
            if any(tool.get("type") == tool_type for tool in attachment.get("tools") or []):
                found[attachment["file_id"]] = None
    return list(found)


def attached_code_files(messages: Sequence[Message]) -> list[str]:
    """The files messages attach for ``code_interpreter``, in order, each once."""
    return _attached_for("code_interpreter", messages)


def attached_search_files(messages: Sequence[Message]) -> list[str]:
    """The files messages attach for ``file_search``, in order, each once: they go into the
    thread's own vector store (see ``domain.vector_stores.ThreadStorePlan``)."""
    return _attached_for("file_search", messages)


def thread_store_id(resources: Mapping[str, Any] | None) -> str | None:
    """The vector store a thread's ``file_search`` resources name (a thread has at most one)."""
    ids = ((resources or {}).get("file_search") or {}).get("vector_store_ids") or []
    return str(ids[0]) if ids else None


def with_search_store(resources: Mapping[str, Any] | None, store_id: str) -> dict[str, Any]:
    """Tool resources whose ``file_search`` names ``store_id`` (in place of any store named before)."""
    current = dict(resources or {})
    current["file_search"] = {**(current.get("file_search") or {}), "vector_store_ids": [store_id]}
    return current


def with_code_files(resources: dict[str, Any] | None, file_ids: Sequence[str]) -> dict[str, Any] | None:
    """Tool resources with ``file_ids`` added to ``code_interpreter``; ``None`` if nothing is new."""
    current = dict(resources or {})
    code = dict(current.get("code_interpreter") or {})
    ids = list(code.get("file_ids") or [])
    new = [file_id for file_id in file_ids if file_id not in ids]
    if not new:
        return None
    code["file_ids"] = ids + new
    current["code_interpreter"] = code
    return current


def without_file(resources: dict[str, Any] | None, file_id: str) -> dict[str, Any] | None:
    """Tool resources with ``file_id`` taken out wherever it is listed; ``None`` if it was not."""
    if not resources:
        return None
    changed = False
    current = dict(resources)
    code = current.get("code_interpreter")
    if code and file_id in (code.get("file_ids") or []):
        current["code_interpreter"] = {**code, "file_ids": [f for f in code["file_ids"] if f != file_id]}
        changed = True
    search = current.get("file_search")
    if search and search.get("vector_stores"):
        stores = []
        for store in search["vector_stores"]:
            if file_id in (store.get("file_ids") or []):
                store = {**store, "file_ids": [f for f in store["file_ids"] if f != file_id]}
                changed = True
            stores.append(store)
        current["file_search"] = {**search, "vector_stores": stores}
    return current if changed else None
