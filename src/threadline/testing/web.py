"""A fake web for tests and benchmarks: a SearxNG JSON endpoint, the Brave Search API, result pages,
and the misbehaviour a guarded client must survive, served over real HTTP from a background thread.

Point ``THREADLINE_WEB_SEARCH_URL`` at :attr:`FakeWeb.base_url` (and allow ``127.0.0.1/32`` with
``THREADLINE_REMOTE_ALLOW``, since the fake listens on loopback)::

    with FakeWeb() as web:
        ...  # web_search finds web.pages, whose text is served at web.url("/pages/<name>")
        assert web.queries == ["bell rock lighthouse"]

Routes: ``/search?q=…&format=json`` (SearxNG; every page is a result, in order),
``/res/v1/web/search?q=…`` (Brave; needs ``X-Subscription-Token: <brave_key>``), ``/pages/<name>``
(HTML), and for the guard's tests ``/redirect?to=URL`` (without ``to``: a loop), ``/bytes?n=N`` (N bytes of text),
``/gzip?n=N`` (N zero bytes, gzip-compressed), ``/stream?n=N`` (N bytes, chunked, no length), ``/trickle`` (a byte every 50 ms until the client
goes), ``/cookie`` (sets one) and ``/headers`` (the request's headers as JSON).
"""

from __future__ import annotations

import asyncio
import gzip
import html
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["FakeWeb", "WebPage"]

_HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class WebPage:
    title: str
    text: str
    """The page's body text (paragraphs separated by blank lines); served inside a full HTML page."""
    snippet: str = ""

    def html(self) -> str:
        paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in self.text.split("\n\n"))
        return (
            f"<!doctype html><html><head><title>{html.escape(self.title)}</title>"
            "<style>p { color: #333 }</style><script>var tracking = 'never shown';</script></head>"
            f"<body><nav>Home | About</nav><h1>{html.escape(self.title)}</h1>{paragraphs}</body></html>"
        )


DEFAULT_PAGES = {
    "bell-rock": WebPage(
        "Bell Rock Lighthouse",
        "The Bell Rock Lighthouse, off the coast of Angus, was first lit in 1811.\n\n"
        "It is the oldest surviving sea-washed lighthouse in the world.",
        "The oldest surviving sea-washed lighthouse, first lit in 1811.",
    ),
    "tides": WebPage(
        "Tide tables explained",
        "Spring tides come about twice a month, near the new and the full moon.\n\n"
        "Neap tides fall between them, when the sun and moon pull at right angles.",
        "Spring and neap tides, and when they come.",
    ),
    "kelp": WebPage(
        "Kelp forests",
        "Giant kelp can grow half a metre in a single day.\n\nKelp forests shelter fish and otters.",
        "How fast giant kelp grows.",
    ),
}


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready_event = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self._ready_event.set()


class FakeWeb:
    """The fake web (over TLS with ``ssl_certfile`` and ``ssl_keyfile``). ``pages`` (name → :class:`WebPage`) may be changed while it runs; so may
    ``search_status`` (an error status for every search) and ``search_hang`` (searches never answer)."""

    def __init__(
        self,
        *,
        brave_key: str = "brave-test-key",
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        self.scheme = "https" if ssl_certfile else "http"
        self._ssl = (ssl_certfile, ssl_keyfile)
        self.pages: dict[str, WebPage] = dict(DEFAULT_PAGES)
        self.brave_key = brave_key
        self.search_status = 200
        self.search_hang = False
        self.port = 0
        self.startup_timeout = startup_timeout
        self._lock = threading.Lock()
        self._queries: list[str] = []
        self._requests: list[str] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: _Server | None = None
        self.app = Starlette(
            routes=[
                Route("/search", self._searxng),
                Route("/res/v1/web/search", self._brave),
                Route("/pages/{name}", self._page),
                Route("/redirect", self._redirect),
                Route("/bytes", self._bytes),
                Route("/gzip", self._gzip),
                Route("/stream", self._stream),
                Route("/trickle", self._trickle),
                Route("/cookie", self._cookie),
                Route("/headers", self._headers),
            ]
        )

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{_HOST}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def page_url(self, name: str) -> str:
        return self.url(f"/pages/{name}")

    def start(self) -> FakeWeb:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((_HOST, 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=2,
            ssl_certfile=self._ssl[0],
            ssl_keyfile=self._ssl[1],
        )
        ready = threading.Event()
        self._stopping.clear()
        self._server = _Server(config, ready)
        server = self._server

        def serve() -> None:
            try:
                server.run(sockets=[sock])
            finally:
                sock.close()
                ready.set()

        self._thread = threading.Thread(target=serve, name=f"fake-web-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(self.startup_timeout) or not server.started:
            self.stop()
            raise RuntimeError(f"FakeWeb did not start within {self.startup_timeout}s")
        return self

    def stop(self) -> None:
        """Stop serving (trickling and hanging answers end). Safe to call twice."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.should_exit = True
        thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FakeWeb:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- records ---------------------------------------------------------------------------------

    @property
    def queries(self) -> list[str]:
        """Every search query received (both APIs), in order."""
        with self._lock:
            return list(self._queries)

    @property
    def requests(self) -> list[str]:
        """The path of every request received, in order."""
        with self._lock:
            return list(self._requests)

    def _note(self, request: Request, query: str | None = None) -> None:
        with self._lock:
            self._requests.append(request.url.path)
            if query is not None:
                self._queries.append(query)

    async def _until_stopped(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(0.05)

    # -- search APIs -----------------------------------------------------------------------------

    async def _search_failure(self) -> Response | None:
        if self.search_hang:
            await self._until_stopped()
        if self.search_status != 200:
            return PlainTextResponse("search engine unavailable", status_code=self.search_status)
        return None

    async def _searxng(self, request: Request) -> Response:
        query = request.query_params.get("q", "")
        self._note(request, query)
        if request.query_params.get("format") != "json":
            return PlainTextResponse("format=json is required here", status_code=403)
        if (failure := await self._search_failure()) is not None:
            return failure
        results = [
            {"url": self.page_url(name), "title": page.title, "content": page.snippet, "engine": "fake"}
            for name, page in list(self.pages.items())
        ]
        return JSONResponse({"query": query, "number_of_results": len(results), "results": results})

    async def _brave(self, request: Request) -> Response:
        query = request.query_params.get("q", "")
        self._note(request, query)
        if request.headers.get("x-subscription-token") != self.brave_key:
            return JSONResponse(
                {"type": "ErrorResponse", "error": {"code": "SUBSCRIPTION_TOKEN_INVALID"}}, 401
            )
        if (failure := await self._search_failure()) is not None:
            return failure
        results = [
            {
                "title": page.title,
                "url": self.page_url(name),
                "description": f"<strong>{page.snippet}</strong>",
            }
            for name, page in list(self.pages.items())
        ]
        return JSONResponse({"type": "search", "query": {"original": query}, "web": {"results": results}})

    async def _page(self, request: Request) -> Response:
        self._note(request)
        page = self.pages.get(request.path_params["name"])
        if page is None:
            return PlainTextResponse("no such page", status_code=404)
        return Response(page.html(), media_type="text/html; charset=utf-8")

    # -- misbehaviour ----------------------------------------------------------------------------

    async def _redirect(self, request: Request) -> Response:
        self._note(request)
        # With no ``to``, to itself: a redirect loop.
        return RedirectResponse(request.query_params.get("to", str(request.url)), status_code=302)

    async def _bytes(self, request: Request) -> Response:
        self._note(request)
        return PlainTextResponse("x" * int(request.query_params.get("n", "0")))

    async def _gzip(self, request: Request) -> Response:
        self._note(request)
        body = gzip.compress(b"\0" * int(request.query_params.get("n", "0")))
        return Response(body, media_type="text/plain", headers={"Content-Encoding": "gzip"})

    async def _stream(self, request: Request) -> Response:
        self._note(request)
        size = int(request.query_params.get("n", "0"))

        async def body() -> AsyncIterator[bytes]:
            for start in range(0, size, 100):
                yield b"x" * min(100, size - start)

        return StreamingResponse(body(), media_type="text/plain")

    async def _trickle(self, request: Request) -> Response:
        self._note(request)

        async def body() -> AsyncIterator[bytes]:
            while not self._stopping.is_set():
                yield b"."
                await asyncio.sleep(0.05)

        return StreamingResponse(body(), media_type="text/plain")

    async def _cookie(self, request: Request) -> Response:
        self._note(request)
        response = PlainTextResponse("a cookie for you")
        response.set_cookie("session", "secret")
        return response

    async def _headers(self, request: Request) -> Response:
        self._note(request)
        headers: dict[str, Any] = dict(request.headers)
        return JSONResponse(headers)
