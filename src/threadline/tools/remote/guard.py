"""The one guarded HTTP client: every outbound fetch (MCP servers, search backends, web pages,
``input_file`` URLs) goes through it, so a URL a client or a model names cannot reach the server's
own network.

The rules: only ``http``/``https``; the host is resolved once per connection and the connection is
made to the address that was checked (a network backend below the HTTP client, so no second lookup
can be rebound, while TLS's SNI and the ``Host`` header still name the host); private, loopback,
link-local, metadata, unspecified, multicast and reserved addresses (also as IPv4-mapped, NAT64,
6to4 or IPv4-compatible IPv6) are refused unless ``THREADLINE_REMOTE_ALLOW`` names them; redirects
are followed a bounded number of times, each hop checked the same way; connecting, reading and (for
:meth:`RemoteGuard.fetch`) the whole fetch take bounded time; a response may bring at most
``THREADLINE_REMOTE_MAX_BYTES`` after decompression; no cookies are kept and no proxy settings are
read from the environment.

The clients are ``httpx2`` clients, the HTTP client of the ``mcp`` SDK, so the same guard serves
``streamable_http_client(url, http_client=guard.client(...))`` and
``sse_client(url, httpx_client_factory=guard.httpx_client_factory)``.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import anyio
import httpcore2
import httpx2

from threadline.config import Settings
from threadline.errors import RemoteFetchError, RemoteRefusedError, describe_size
from threadline.tools.remote.addresses import (
    SCHEMES,
    IPAddress,
    RemotePolicy,
    Resolver,
    host_literal,
)

_CONNECT_ATTEMPTS = 4
"""Addresses of one host tried in turn before connecting fails."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system's resolver (``getaddrinfo``)."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _display(url: httpx2.URL) -> str:
    """A URL for messages and logs: no userinfo, query or fragment (they may carry secrets)."""
    return str(url.copy_with(userinfo=b"", query=None, fragment=None))


def check_url(url: str | httpx2.URL) -> httpx2.URL:
    """``url`` parsed, or :class:`RemoteRefusedError` when it is not an http(s) URL with a host."""
    try:
        parsed = httpx2.URL(url)
    except (httpx2.InvalidURL, TypeError) as exc:
        raise RemoteRefusedError(f"The URL {str(url)[:200]!r} is refused: it is not a valid URL.") from exc
    if parsed.scheme not in SCHEMES:
        raise RemoteRefusedError(
            f"The URL {str(url)[:200]!r} is refused: only http and https URLs are fetched."
        )
    if not parsed.host:
        raise RemoteRefusedError(f"The URL {_display(parsed)!r} is refused: it names no host.")
    return parsed


class _PinnedBackend(httpcore2.AsyncNetworkBackend):
    """Resolves the host once, checks every address and connects to a checked one (so a second
    lookup can never be rebound). TLS above it still uses the host name for SNI and verification."""

    def __init__(self, policy: RemotePolicy, resolver: Resolver) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore2.AnyIOBackend()

    async def addresses(self, host: str, port: int) -> list[IPAddress]:
        literal = host_literal(host)
        named = [literal] if literal is not None else None
        if named is None:
            try:
                named = [ipaddress.ip_address(a) for a in await self._resolver(host, port)]
            except (OSError, ValueError) as exc:
                raise httpcore2.ConnectError(f"cannot resolve {host}: {exc}") from exc
            if not named:
                raise httpcore2.ConnectError(f"cannot resolve {host}: no addresses")
            if self._policy.host_allowed(host):
                return named
        for address in named:
            kind = self._policy.refusal(address)
            if kind is not None:
                how = "" if literal is not None else f"it resolves to {address}, "
                raise RemoteRefusedError(
                    f"Refused to connect to {host}: {how}a {kind} address; this server reaches such "
                    "addresses only when THREADLINE_REMOTE_ALLOW names them."
                )
        return named

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await self.addresses(host, port)
        except TimeoutError as exc:
            raise httpcore2.ConnectTimeout(f"resolving {host} took too long") from exc
        failure: Exception | None = None
        for address in addresses[:_CONNECT_ATTEMPTS]:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except httpcore2.ConnectError as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        raise RemoteRefusedError("Refused: outbound fetches do not use Unix sockets.")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


def _too_large(where: str, limit: int) -> RemoteFetchError:
    return RemoteFetchError(
        f"The response from {where} is larger than {describe_size(limit)} (THREADLINE_REMOTE_MAX_BYTES).",
        code="response_too_large",
    )


class _BoundedBody(httpx2.AsyncByteStream):
    """A response body cut off at ``limit`` bytes, counted after decompression (gzip and deflate are
    decoded here, so a small compressed body cannot inflate past the limit further up)."""

    def __init__(self, inner: httpx2.AsyncByteStream, limit: int, compressed: bool, where: str) -> None:
        self._inner = inner
        self._limit = limit
        self._where = where
        self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32) if compressed else None
        self._seen = 0

    def _count(self, chunk: bytes) -> bytes:
        self._seen += len(chunk)
        if self._seen > self._limit:
            raise _too_large(self._where, self._limit)
        return chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        decoder = self._decoder
        try:
            async for chunk in self._inner:
                # At most one byte past the limit is inflated: enough to know it is too large.
                out = chunk if decoder is None else decoder.decompress(chunk, self._limit - self._seen + 1)
                if out:
                    yield self._count(out)
            if decoder is not None and (rest := decoder.flush()):
                yield self._count(rest)
        except zlib.error as exc:
            raise RemoteFetchError(f"The response from {self._where} is damaged ({exc}).") from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


class GuardedTransport(httpx2.AsyncHTTPTransport):
    """An ``httpx2`` transport whose connections go through :class:`_PinnedBackend` and whose bodies
    are bounded."""

    def __init__(self, policy: RemotePolicy, resolver: Resolver, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        self._policy = policy
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_PinnedBackend(policy, resolver),
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        check_url(request.url)
        response = await super().handle_async_request(request)
        where, limit = request.url.host, self._policy.max_bytes
        length = response.headers.get("content-length", "")
        encoding = response.headers.get("content-encoding", "").strip().lower()
        headers = response.headers
        if length.isdigit() and int(length) > limit:
            await response.aclose()
            raise _too_large(where, limit)
        if encoding in ("gzip", "x-gzip", "deflate"):
            headers = httpx2.Headers([(k, v) for k, v in headers.multi_items() if k not in _DECODED])
        elif encoding not in ("", "identity"):
            await response.aclose()
            raise RemoteFetchError(f"The response from {where} uses an unsupported encoding ({encoding}).")
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            status_code=response.status_code,
            headers=headers,
            stream=_BoundedBody(response.stream, limit, headers is not response.headers, where),
            extensions=response.extensions,
        )


_DECODED = frozenset({"content-encoding", "content-length"})


class _NoCookies(DefaultCookiePolicy):
    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Any, request: Any) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str
    """Where the body came from (after redirects)."""
    status: int
    content_type: str
    """The media type, lower case, without parameters (``text/html``)."""
    body: bytes


class RemoteGuard:
    """Makes guarded clients and fetches; one per process, built from the settings."""

    def __init__(
        self,
        policy: RemotePolicy | None = None,
        *,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy or RemotePolicy()
        self._resolver = resolver or system_resolver
        self._ssl_context = ssl_context or httpx2.create_ssl_context(trust_env=False)

    @classmethod
    def from_settings(cls, settings: Settings, *, resolver: Resolver | None = None) -> RemoteGuard:
        return cls(RemotePolicy.from_settings(settings), resolver=resolver)

    def client(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: httpx2.Timeout | float | None = None,
        auth: httpx2.Auth | None = None,
        follow_redirects: bool = False,
    ) -> httpx2.AsyncClient:
        """A guarded ``httpx2.AsyncClient`` (use it as an async context manager)."""
        base = {"Accept-Encoding": "gzip, deflate"}
        return httpx2.AsyncClient(
            transport=GuardedTransport(self.policy, self._resolver, self._ssl_context),
            headers={**base, **(headers or {})},
            timeout=self.policy.timeout_seconds if timeout is None else timeout,
            auth=auth,
            follow_redirects=follow_redirects,
            max_redirects=self.policy.max_redirects,
            cookies=CookieJar(policy=_NoCookies()),
            trust_env=False,
        )

    def httpx_client_factory(
        self,
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        """The ``mcp`` SDK's ``McpHttpClientFactory`` (``sse_client(..., httpx_client_factory=...)``).

        The SDK's timeouts are kept but held to the guard's: connecting within
        ``THREADLINE_REMOTE_TIMEOUT_SECONDS``."""
        limit = self.policy.timeout_seconds
        if timeout is None:
            bounded = httpx2.Timeout(limit)
        else:
            bounded = httpx2.Timeout(
                limit if timeout.read is None else timeout.read,
                connect=min(timeout.connect or limit, limit),
                write=min(timeout.write or limit, limit),
                pool=min(timeout.pool or limit, limit),
            )
        return self.client(headers=headers, timeout=bounded, auth=auth)

    async def fetch(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
    ) -> Fetched:
        """One request, redirects followed (each hop checked), the body read whole within the limits.

        Raises :class:`RemoteRefusedError` for a URL the guard refuses and :class:`RemoteFetchError`
        when the fetch fails (timeout, too large, an error status, no connection)."""
        target = check_url(url)
        shown = _display(target)
        limit = self.policy.timeout_seconds
        try:
            with anyio.fail_after(limit):
                async with self.client() as client:
                    request = client.build_request(method, target, headers=headers, params=params, json=json)
                    for _ in range(self.policy.max_redirects + 1):
                        response = await client.send(request, stream=True)
                        try:
                            if not response.is_redirect:
                                body = await response.aread()
                                return _fetched(response, body)
                            following = response.next_request
                        finally:
                            await response.aclose()
                        if following is None:
                            raise RemoteFetchError(f"{shown} answered a redirect with no location.")
                        if _origin(following.url) != _origin(request.url) and headers:
                            for name in headers:  # credentials meant for the first host stay there
                                following.headers.pop(name, None)
                        request = following
                    raise RemoteFetchError(
                        f"{shown} redirected more than {self.policy.max_redirects} times.",
                        code="too_many_redirects",
                    )
        except TimeoutError as exc:
            raise RemoteFetchError(
                f"Fetching {shown} took longer than {limit:g} s (THREADLINE_REMOTE_TIMEOUT_SECONDS).",
                code="remote_timeout",
            ) from exc
        except httpx2.TimeoutException as exc:
            raise RemoteFetchError(
                f"Fetching {shown} timed out ({type(exc).__name__}; THREADLINE_REMOTE_TIMEOUT_SECONDS).",
                code="remote_timeout",
            ) from exc
        except httpx2.HTTPError as exc:
            raise RemoteFetchError(f"Fetching {shown} failed: {exc}.") from exc

    async def fetch_file(self, url: str) -> tuple[str, bytes]:
        """A file at ``url``: its media type and bytes (``input_file``'s ``file_url``)."""
        fetched = await self.fetch(url)
        return fetched.content_type, fetched.body


def _origin(url: httpx2.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _fetched(response: httpx2.Response, body: bytes) -> Fetched:
    shown = _display(response.request.url)
    if response.status_code >= 400:
        raise RemoteFetchError(f"{shown} answered {response.status_code} {response.reason_phrase}.")
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return Fetched(str(response.request.url), response.status_code, content_type, body)
