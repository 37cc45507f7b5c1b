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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import anyio
import httpcore2
import httpx2

from threadline.config import Settings
from threadline.errors import RemoteFetchError, RemoteRefusedError, describe_size

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""Looks a host name up: its addresses, as strings. The seam where tests map names to addresses."""

SCHEMES = ("http", "https")
MAX_REDIRECTS = 5
_CONNECT_ATTEMPTS = 4
"""Addresses of one host tried in turn before connecting fails."""


def _networks(*pairs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), name) for net, name in pairs)


# First match names the class; the metadata addresses come before the ranges that hold them.
_V4_CLASSES = _networks(
    ("169.254.169.254/32", "cloud metadata"),
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "documentation"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("198.18.0.0/15", "benchmarking"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)
_V6_CLASSES = _networks(
    ("fd00:ec2::254/128", "cloud metadata"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fc00::/7", "private"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
    ("64:ff9b:1::/48", "NAT64 (local use)"),
    ("100::/64", "discard"),
    ("2001:db8::/32", "documentation"),
    ("2001::/23", "reserved"),
)
# IPv6 forms that carry an IPv4 address: they are what the IPv4 address is.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded_v4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64"
    if address.sixtofour is not None:
        return address.sixtofour, "6to4"
    if address in _V4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "IPv4-compatible"
    return None


def address_class(address: IPAddress) -> str | None:
    """The kind of non-public address ``address`` is (``loopback``, ``private`` ...), or None for a
    public one."""
    if isinstance(address, ipaddress.IPv4Address):
        for network, name in _V4_CLASSES:
            if address in network:
                return name
        return None if address.is_global else "reserved"
    for network, name in _V6_CLASSES:
        if address in network:
            return name
    embedded = _embedded_v4(address)
    if embedded is not None:
        inner = address_class(embedded[0])
        return None if inner is None else f"{inner} (as {embedded[1]} IPv6)"
    return None if address.is_global else "reserved"


def _host_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class RemotePolicy:
    """What outbound fetches may reach, and how long and how much they may take."""

    allow_networks: tuple[IPNetwork, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    """Host names allowed whatever they resolve to; ``.example.internal`` allows the names under it."""
    timeout_seconds: float = 20.0
    max_bytes: int = 8 * 1024 * 1024
    max_redirects: int = MAX_REDIRECTS

    @classmethod
    def from_settings(cls, settings: Settings) -> RemotePolicy:
        networks, hosts = parse_allow(settings.remote_allow)
        return cls(networks, hosts, settings.remote_timeout_seconds, settings.remote_max_bytes)

    def host_allowed(self, host: str) -> bool:
        name = host.lower().rstrip(".")
        return any(
            name == entry or (entry.startswith(".") and name.endswith(entry)) for entry in self.allow_hosts
        )

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be reached (its class), or None when it may."""
        kind = address_class(address)
        if kind is None:
            return None
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and (embedded := _embedded_v4(address)) is not None:
            candidates.append(embedded[0])
        if any(a in net for a in candidates for net in self.allow_networks if a.version == net.version):
            return None
        return kind


def parse_allow(text: str) -> tuple[tuple[IPNetwork, ...], tuple[str, ...]]:
    """``THREADLINE_REMOTE_ALLOW``'s entries: networks (CIDRs or addresses) and host names."""
    networks: list[IPNetwork] = []
    hosts: list[str] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        name = entry.lower().rstrip(".")
        if "/" in name or ":" in name or not name.strip("."):
            raise ValueError(f"THREADLINE_REMOTE_ALLOW: {entry!r} is neither a network nor a host name")
        hosts.append(name)
    return tuple(networks), tuple(hosts)


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
        literal = _host_literal(host)
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
