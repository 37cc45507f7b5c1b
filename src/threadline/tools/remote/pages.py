"""Reading search results' pages for the model: each page fetched through the remote guard, its
text extracted with file search's linear HTML scanner (``retrieval/parsing.py``) and cut to a share
of the search's character budget before anything reaches the model.

Only HTML and plain-text pages are read (documents such as PDFs are not parsed in the server
process); a page that cannot be read keeps the search engine's snippet and says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from threadline.errors import FileContentError, RemoteFetchError
from threadline.retrieval.parsing import ParseLimits, parse
from threadline.tools.remote.guard import RemoteGuard
from threadline.tools.remote.search import SearchHit

_FILENAMES = {
    "text/html": "page.html",
    "application/xhtml+xml": "page.html",
    "text/plain": "page.txt",
    "text/markdown": "page.md",
}
_PARSE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Page:
    url: str
    title: str
    text: str
    """The page's text, cut to its share of the budget (the snippet when it could not be read)."""
    error: str = ""
    """Why the page itself could not be read; empty when it was."""


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ", limit - 200 if limit > 200 else 0)
    return (cut[:space] if space > 0 else cut).rstrip() + " …"


def _utf8(body: bytes) -> bytes:
    """Pages that are not UTF-8 are most often Windows-1252 (or Latin-1, its subset)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("cp1252", errors="replace").encode("utf-8")
    return body


async def read_page(guard: RemoteGuard, hit: SearchHit, limit: int) -> Page:
    """The text of one result's page, at most ``limit`` characters."""
    try:
        fetched = await guard.fetch(hit.url, headers={"Accept": "text/html, text/plain;q=0.9"})
        filename = _FILENAMES.get(fetched.content_type)
        if filename is None:
            raise RemoteFetchError(f"it is {fetched.content_type or 'of no stated type'}, not a page of text")
        # Text is never longer than its bytes (decoding and scanning each count them): the cut below
        # bounds what the model gets, the parser's own limit is only a backstop.
        limits = ParseLimits(max_characters=2 * len(fetched.body) + 1, timeout_seconds=_PARSE_SECONDS)
        text = await anyio.to_thread.run_sync(parse, filename, _utf8(fetched.body), limits)
    except (RemoteFetchError, FileContentError) as exc:
        return Page(hit.url, hit.title, _cut(hit.snippet, limit), error=exc.message)
    return Page(hit.url, hit.title, _cut(text, limit))


async def read_pages(
    guard: RemoteGuard, hits: Sequence[SearchHit], *, page_characters: int, total_characters: int
) -> list[Page]:
    """The results' pages, fetched at once, in the results' order; each gets an equal share of
    ``total_characters`` and at most ``page_characters``."""
    if not hits:
        return []
    share = max(1, min(page_characters, total_characters // len(hits)))
    pages: list[Page | None] = [None] * len(hits)

    async def read(index: int, hit: SearchHit) -> None:
        pages[index] = await read_page(guard, hit, share)

    async with anyio.create_task_group() as group:
        for index, hit in enumerate(hits):
            group.start_soon(read, index, hit)
    return [page for page in pages if page is not None]
