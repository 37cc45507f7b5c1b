"""``input_file`` parts of a response's input: a file given to the model as its text.

A part names an uploaded file of the project (``file_id``) or carries the file (``file_data``,
base64, usually as a ``data:`` URL, with its ``filename``). Its text is extracted once, as the
request arrives, by the same parser file search uses and in the same bounded child process (the
:class:`TextExtractor` port; ``workers/ingestion.py`` implements it), held to
``THREADLINE_INPUT_FILE_MAX_CHARACTERS``; ``file_data`` is held to the upload limit. The stored part
keeps the file's id, its name and that text, so later turns of a conversation do not parse it again;
the model is shown the text (``domain/prompt_messages.py``), clients are shown the id and the name
(and the URL). An image is kept as an image and goes to a model that sees, as an ``input_image``
does. A ``file_url`` is fetched through the remote guard (the :class:`UrlFetcher` port;
``tools/remote/guard.py``), so it is held to public addresses, ``THREADLINE_REMOTE_TIMEOUT_SECONDS``
and ``THREADLINE_REMOTE_MAX_BYTES``, and then read as ``file_data`` is.

The API layer gives a part still to be read as a :class:`~threadline.domain.content.PendingFile`
(a chat completion's as ``{"type": "input_file", "input_file": {...}, "param": "messages[1]..."}``;
``param`` names it in errors); :meth:`InputFiles.read` turns it into an
:class:`~threadline.domain.content.InputFile` (its text, or the image it is).
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
from pathlib import PurePosixPath
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from threadline.domain.content import InputFile, Part, PendingFile
from threadline.domain.files import IMAGE_MAX_BYTES, FileService, image_type
from threadline.domain.prompt_messages import ImageSource, file_part
from threadline.errors import FileContentError, InvalidRequestError, NotFoundError, describe_size

_FILENAME_LIMIT = 255
_IMAGE_SUFFIXES = (".png", ".jpeg", ".jpg", ".gif", ".webp")
_WHITESPACE = re.compile(r"\s+")
_MEDIA_TYPES = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "text/markdown": ".md",
    "text/plain": ".txt",
}


class TextExtractor(Protocol):
    async def extract_text(self, key: str, filename: str, data: bytes, max_characters: int) -> str:
        """The text of the file ``filename`` holding ``data`` (``key``: its project, for fair turns),
        or :class:`~threadline.errors.FileContentError` saying why it has none to give."""


class UrlFetcher(Protocol):
    async def fetch_file(self, url: str) -> tuple[str, bytes]:
        """The media type and bytes at ``url``, or :class:`~threadline.errors.InvalidRequestError`
        (a refused URL, a failed fetch) saying why."""


def pending(part: dict[str, Any]) -> bool:
    """Whether a chat completion's ``part`` is an ``input_file`` part still to be read."""
    return part.get("type") == "input_file" and "param" in part


class InputFiles:
    def __init__(
        self,
        extractor: TextExtractor | None,
        *,
        max_characters: int,
        max_bytes: int,
        fetcher: UrlFetcher | None = None,
    ) -> None:
        self.extractor = extractor
        self.fetcher = fetcher
        self.max_characters = max_characters
        self.max_bytes = max_bytes

    async def read(self, content: list[Part], files: FileService) -> list[Part]:
        """A message's parts with each ``input_file`` part read (the others as they are)."""
        return [
            await self._part(part.given, part.param, files) if isinstance(part, PendingFile) else part
            for part in content
        ]

    async def for_chat(
        self, content: list[dict[str, Any]], files: FileService, images: ImageSource
    ) -> list[dict[str, Any]]:
        """Chat completion content parts with each ``input_file`` part read and shown as a response's
        is (its text, or its image as a data URL)."""
        out: list[dict[str, Any]] = []
        for part in content:
            if not pending(part):
                out.append(part)
                continue
            file = await self._part(part["input_file"], part["param"], files)
            urls: dict[str, str] = {}
            if file.image and file.file_id is not None:
                url = await images.data_url(file.file_id, files.project_id)
                urls = {file.file_id: url} if url is not None else {}
            out.append(file_part(file, [], urls, vision=True))
        return out

    async def _part(self, given: dict[str, Any], at: str, files: FileService) -> InputFile:
        filename = given.get("filename")
        if filename is not None:
            _check_name(filename, f"{at}.filename")
        file_url: str | None = None  # a fetched file keeps its URL
        if given.get("file_id") is not None:
            file_id = str(given["file_id"])
            try:
                file = await files.get_file(file_id)
            except NotFoundError:
                raise InvalidRequestError(
                    f"Invalid '{at}.file_id': no file found with id '{file_id[:100]}'.", param=f"{at}.file_id"
                ) from None
            name = filename or file.filename
            if file.content_type.startswith("image/") or file.filename.lower().endswith(_IMAGE_SUFFIXES):
                # Read when the model is asked (and only for one that sees), as an ``input_image``.
                return InputFile(file_id, name, image=True)
            _, data = await files.read_bytes(file_id, self.max_bytes)
            if image_type(data) is not None:
                return InputFile(file_id, name, image=True)
            parse_as = file.filename
        elif given.get("file_data") is not None or given.get("file_url") is not None:
            source = "file_data" if given.get("file_data") is not None else "file_url"
            if source == "file_data":
                media_type, data = self._decode(str(given["file_data"]), f"{at}.file_data")
            else:
                file_url = url = str(given["file_url"])
                media_type, data = await self._fetch(url, f"{at}.file_url")
                filename = filename or _url_name(url)
            name = filename or "file" + _suffix(media_type)
            kind = image_type(data)
            if kind is not None:
                if len(data) > IMAGE_MAX_BYTES:
                    raise InvalidRequestError(
                        f"Invalid '{at}.{source}': an image may be at most {describe_size(IMAGE_MAX_BYTES)}.",
                        param=f"{at}.{source}",
                    )
                image = f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"
                return InputFile(None, name, image_url=image, file_url=file_url)
            parse_as = name if PurePosixPath(name).suffix else name + _suffix(media_type)
            if source == "file_url" and media_type not in ("", "application/octet-stream"):
                # A server's media type says more than its URL's name (``report.php`` serving HTML).
                suffix = _suffix(media_type)
                if suffix and PurePosixPath(parse_as).suffix.lower() != suffix:
                    parse_as = name + suffix
            file_id = None
        else:
            raise InvalidRequestError(
                f"Missing required parameter: '{at}.file_id' or '{at}.file_data'.", param=f"{at}.file_id"
            )
        if self.extractor is None:
            raise InvalidRequestError("This server does not read input files.", param=at)
        try:
            text = await self.extractor.extract_text(files.project_id, parse_as, data, self.max_characters)
        except FileContentError as exc:
            raise FileContentError(f"Invalid '{at}': {exc.message}", param=at, code=exc.code) from None
        return InputFile(file_id, name, text, file_url=file_url)

    async def _fetch(self, url: str, param: str) -> tuple[str, bytes]:
        if self.fetcher is None:
            raise InvalidRequestError(
                f"Invalid '{param}': this server does not fetch files from URLs. Upload the file "
                "(POST /v1/files) and give its 'file_id', or send its content as 'file_data'.",
                param=param,
            )
        try:
            media_type, data = await self.fetcher.fetch_file(url)
        except InvalidRequestError as exc:
            raise InvalidRequestError(
                f"Invalid '{param}': {exc.message}", param=param, code=exc.code
            ) from None
        if not data:
            raise InvalidRequestError(f"Invalid '{param}': the file is empty.", param=param)
        if len(data) > self.max_bytes:
            raise InvalidRequestError(
                f"Invalid '{param}': the file is larger than the {describe_size(self.max_bytes)} allowed"
                " (THREADLINE_FILE_MAX_BYTES).",
                param=param,
            )
        return media_type, data

    def _decode(self, value: str, param: str) -> tuple[str, bytes]:
        """``file_data`` (a ``data:`` URL or bare base64): its media type (``""`` if not given) and bytes."""
        media_type, payload = "", value
        if value.startswith("data:"):
            header, comma, payload = value.partition(",")
            if not comma or not header.endswith(";base64"):
                raise InvalidRequestError(
                    f"Invalid '{param}': expected base64 data, as 'data:<media type>;base64,<data>'.",
                    param=param,
                )
            media_type = header[5:].split(";")[0].strip().lower()
        if len(payload) // 4 * 3 > self.max_bytes:
            raise InvalidRequestError(
                f"Invalid '{param}': the file is larger than the {describe_size(self.max_bytes)} allowed"
                " (THREADLINE_FILE_MAX_BYTES).",
                param=param,
            )
        if _WHITESPACE.search(payload):
            payload = _WHITESPACE.sub("", payload)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError(f"Invalid '{param}': it is not valid base64.", param=param) from None
        if not data:
            raise InvalidRequestError(f"Invalid '{param}': the file is empty.", param=param)
        return media_type, data


def _suffix(media_type: str) -> str:
    if not media_type:
        return ""
    return _MEDIA_TYPES.get(media_type) or mimetypes.guess_extension(media_type) or ""


def _url_name(url: str) -> str | None:
    """The file name a URL's path ends in, if it is a usable one."""
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    ok = name and len(name.encode()) <= _FILENAME_LIMIT and not any(c in name for c in "\\\x00")
    return name if ok else None


def _check_name(filename: Any, param: str) -> None:
    if (
        not isinstance(filename, str)
        or not filename.strip()
        or len(filename.encode()) > _FILENAME_LIMIT
        or any(c in filename for c in "/\\\x00")
    ):
        raise InvalidRequestError(
            f"Invalid '{param}': a plain file name of 1 to {_FILENAME_LIMIT} bytes.", param=param
        )
