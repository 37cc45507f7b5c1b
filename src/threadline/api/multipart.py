"""Reading a ``multipart/form-data`` request as a stream of fields, each a stream of chunks.

Starlette's own form parser spools every file to a temporary file before the route sees it; for
uploads that go on to a blob store (perhaps S3) that is a second copy of every byte. This reader
hands the route each part as it arrives, its body as chunks straight off the socket.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from threadline.domain.files import UploadField
from threadline.errors import InvalidRequestError

_HEADERS_LIMIT = 16 * 1024
"""Bytes of headers one part may carry."""


class _Malformed(InvalidRequestError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"The multipart/form-data body could not be read: {detail}")


class FormReader:
    """Parts of a multipart body, read as the client sends them.

    ``parts()`` yields one :class:`UploadField` at a time; its ``chunks`` must be consumed (or
    dropped) before the next part is asked for, whatever is left of it is skipped.
    """

    def __init__(self, request: Request) -> None:
        content_type, options = parse_options_header(request.headers.get("content-type", ""))
        boundary = options.get(b"boundary")
        if content_type != b"multipart/form-data" or not boundary:
            raise InvalidRequestError(
                "Uploads must be sent as multipart/form-data, with the fields 'file' and 'purpose'."
            )
        self._body = request.stream()
        self._events: deque[tuple[str, Any]] = deque()
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._header_bytes = 0
        self._done = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    # Parser callbacks: they only queue events; the async side acts on them.

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._header_bytes = 0

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]
        self._count_header(end - start)

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._count_header(end - start)

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > _HEADERS_LIMIT:
            raise _Malformed("a part's headers are too large.")

    def _on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def _on_headers_finished(self) -> None:
        self._events.append(("part", self._headers))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._events.append(("data", data[start:end]))

    def _on_part_end(self) -> None:
        self._events.append(("end", None))

    def _on_end(self) -> None:
        self._done = True

    async def _next_event(self) -> tuple[str, Any] | None:
        while not self._events:
            if self._done:
                return None
            try:
                chunk = await self._body.__anext__()
            except ClientDisconnect:
                # Nobody will read the answer; this only ends the upload cleanly (and quietly).
                raise _Malformed("the client went away before the end of the body.") from None
            except StopAsyncIteration:
                if not self._done:
                    raise _Malformed("the body ended before the closing boundary.") from None
                return None
            try:
                self._parser.write(chunk)
            except MultipartParseError as exc:
                raise _Malformed(str(exc) or "bad framing.") from None
        return self._events.popleft()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while (event := await self._next_event()) is not None:
            kind, value = event
            if kind == "end":
                return
            if kind == "data" and value:
                yield value

    async def parts(self) -> AsyncIterator[UploadField]:
        while (event := await self._next_event()) is not None:
            kind, headers = event
            if kind != "part":
                continue  # what is left of a part the consumer did not read to the end
            disposition, options = parse_options_header(headers.get(b"content-disposition", b""))
            if disposition != b"form-data" or b"name" not in options:
                raise _Malformed("a part has no 'Content-Disposition: form-data; name=...' header.")
            filename = options.get(b"filename")
            content_type = headers.get(b"content-type")
            yield UploadField(
                name=_text(options[b"name"]),
                filename=None if filename is None else _text(filename),
                content_type=None if content_type is None else _text(content_type),
                chunks=self._chunks(),
            )


def _text(raw: bytes) -> str:
    # Header values arrive as bytes; clients send UTF-8 names (parse_options_header read them as latin-1).
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")
