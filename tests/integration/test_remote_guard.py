"""The remote guard, row by row: every address class it refuses (as a literal and behind a host
name), what ``THREADLINE_REMOTE_ALLOW`` lets through, redirects, sizes, time, schemes, cookies,
proxies and TLS, against a real HTTP server (``threadline.testing.web.FakeWeb``).

Host names reach the guard through its resolver seam, so no test depends on the machine's DNS.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import re
import ssl
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx2
import pytest

from threadline.config import Settings
from threadline.errors import RemoteFetchError, RemoteRefusedError
from threadline.testing.web import FakeWeb
from threadline.tools.remote.addresses import RemotePolicy, address_class, parse_allow
from threadline.tools.remote.guard import RemoteGuard

LOOPBACK = RemotePolicy(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),))

# (row of the README's table, an address of that class, the class the refusal names)
REFUSED = [
    ("private 10/8", "10.1.2.3", "private"),
    ("private 172.16/12", "172.20.0.5", "private"),
    ("private 192.168/16", "192.168.1.1", "private"),
    ("shared 100.64/10 (CGNAT)", "100.64.0.1", "shared (CGNAT)"),
    ("unique local fc00::/7", "fd12:3456::1", "private"),
    ("loopback 127/8", "127.0.0.1", "loopback"),
    ("loopback 127/8, not .1", "127.8.9.10", "loopback"),
    ("loopback ::1", "::1", "loopback"),
    ("link-local 169.254/16", "169.254.10.1", "link-local"),
    ("cloud metadata 169.254.169.254", "169.254.169.254", "cloud metadata"),
    ("cloud metadata fd00:ec2::254", "fd00:ec2::254", "cloud metadata"),
    ("link-local fe80::/10", "fe80::1", "link-local"),
    ("unspecified 0.0.0.0", "0.0.0.0", "unspecified"),
    ("this network 0/8", "0.1.2.3", "unspecified"),
    ("unspecified ::", "::", "unspecified"),
    ("multicast 224/4", "224.0.0.1", "multicast"),
    ("multicast ff00::/8", "ff02::1", "multicast"),
    ("broadcast 255.255.255.255", "255.255.255.255", "broadcast"),
    ("reserved 240/4", "240.0.0.1", "reserved"),
    ("documentation 192.0.2/24", "192.0.2.1", "documentation"),
    ("benchmarking 198.18/15", "198.18.0.1", "benchmarking"),
    ("IPv4-mapped loopback", "::ffff:127.0.0.1", "loopback (as IPv4-mapped IPv6)"),
    ("IPv4-mapped metadata", "::ffff:169.254.169.254", "cloud metadata (as IPv4-mapped IPv6)"),
    ("IPv4-mapped private", "::ffff:10.0.0.1", "private (as IPv4-mapped IPv6)"),
    ("NAT64 64:ff9b::/96 of a private address", "64:ff9b::10.0.0.1", "private (as NAT64 IPv6)"),
    ("NAT64 64:ff9b::/96 of metadata", "64:ff9b::169.254.169.254", "cloud metadata (as NAT64 IPv6)"),
    ("NAT64 local use 64:ff9b:1::/48", "64:ff9b:1::a00:1", "NAT64 (local use)"),
    ("6to4 of loopback", "2002:7f00:1::1", "loopback (as 6to4 IPv6)"),
    ("IPv4-compatible loopback", "::127.0.0.1", "loopback (as IPv4-compatible IPv6)"),
]
ROW_IDS = [row[0] for row in REFUSED]


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


def resolver(names: Mapping[str, Sequence[str]], calls: list[str] | None = None) -> Any:
    """A resolver seam answering from ``names`` (an unknown name fails as the system's would)."""

    async def resolve(host: str, port: int) -> Sequence[str]:
        if calls is not None:
            calls.append(host)
        if host not in names:
            raise OSError(f"unknown host {host}")
        return names[host]

    return resolve


def literal_url(address: str, path: str = "/") -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:9{path}"


@pytest.fixture(scope="module")
def web() -> Iterator[FakeWeb]:
    with FakeWeb() as fake:
        yield fake


# -- the table --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("row", "address", "kind"), REFUSED, ids=ROW_IDS)
def test_refused_by_literal_address(row: str, address: str, kind: str) -> None:
    assert address_class(ipaddress.ip_address(address)) == kind
    with pytest.raises(RemoteRefusedError) as caught:
        run(RemoteGuard().fetch(literal_url(address)))
    assert f"a {kind} address" in caught.value.message
    assert "THREADLINE_REMOTE_ALLOW" in caught.value.message
    assert (caught.value.status, caught.value.code) == (400, "url_not_allowed")


@pytest.mark.parametrize(("row", "address", "kind"), REFUSED, ids=ROW_IDS)
def test_refused_behind_a_host_name(row: str, address: str, kind: str) -> None:
    guard = RemoteGuard(resolver=resolver({"innocent.example": [address]}))
    with pytest.raises(RemoteRefusedError) as caught:
        run(guard.fetch("http://innocent.example:9/"))
    assert f"it resolves to {ipaddress.ip_address(address)}, a {kind} address" in caught.value.message


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::8.8.8.8"]
)
def test_public_addresses_are_not_refused(address: str) -> None:
    assert address_class(ipaddress.ip_address(address)) is None
    assert RemotePolicy().refusal(ipaddress.ip_address(address)) is None


def test_one_refused_address_among_public_ones_refuses_the_host() -> None:
    guard = RemoteGuard(resolver=resolver({"mixed.example": ["93.184.216.34", "10.0.0.7"]}))
    with pytest.raises(RemoteRefusedError, match=re.escape("resolves to 10.0.0.7, a private address")):
        run(guard.fetch("http://mixed.example/"))


# -- THREADLINE_REMOTE_ALLOW -------------------------------------------------------------------------


def test_loopback_is_refused_until_allowed(web: FakeWeb) -> None:
    with pytest.raises(RemoteRefusedError, match="loopback"):
        run(RemoteGuard().fetch(web.page_url("kelp")))
    fetched = run(RemoteGuard(LOOPBACK).fetch(web.page_url("kelp")))
    assert fetched.status == 200 and b"Giant kelp" in fetched.body
    # 127.0.0.1/32 allows that address only.
    with pytest.raises(RemoteRefusedError, match=re.escape("127.0.0.2: a loopback address")):
        run(RemoteGuard(LOOPBACK).fetch(f"http://127.0.0.2:{web.port}/pages/kelp"))


def test_an_allowed_host_name_may_resolve_anywhere_and_keeps_its_name(web: FakeWeb) -> None:
    policy = RemotePolicy.from_settings(Settings(remote_allow="searx.internal, .corp.example"))
    names = {"searx.internal": ["127.0.0.1"], "a.corp.example": ["127.0.0.1"], "other.example": ["127.0.0.1"]}
    guard = RemoteGuard(policy, resolver=resolver(names))
    fetched = run(guard.fetch(f"http://searx.internal:{web.port}/headers"))
    assert json.loads(fetched.body)["host"] == f"searx.internal:{web.port}"
    assert run(guard.fetch(f"http://a.corp.example:{web.port}/pages/tides")).status == 200
    with pytest.raises(RemoteRefusedError, match=re.escape("other.example: it resolves to 127.0.0.1")):
        run(guard.fetch(f"http://other.example:{web.port}/pages/tides"))


def test_the_allow_setting_parses_networks_addresses_and_names() -> None:
    networks, hosts = parse_allow(" 10.0.0.0/8, 127.0.0.1 ,fd00::/8,[::1], Searx.Internal., .corp.example ")
    assert [str(n) for n in networks] == ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8", "::1/128"]
    assert hosts == ("searx.internal", ".corp.example")
    with pytest.raises(ValueError, match="THREADLINE_REMOTE_ALLOW"):
        parse_allow("http://x/y")


def test_an_allowed_network_covers_its_ipv4_mapped_form() -> None:
    assert LOOPBACK.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert LOOPBACK.refusal(ipaddress.ip_address("::ffff:10.0.0.1")) == "private (as IPv4-mapped IPv6)"


def test_the_host_is_resolved_once_and_the_checked_address_is_the_one_connected(web: FakeWeb) -> None:
    # A resolver that would rebind on a second lookup: the guard must never ask twice.
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])
    calls: list[str] = []

    async def rebinding(host: str, port: int) -> Sequence[str]:
        calls.append(host)
        return next(answers)

    fetched = run(
        RemoteGuard(LOOPBACK, resolver=rebinding).fetch(f"http://rebind.example:{web.port}/headers")
    )
    assert json.loads(fetched.body)["host"] == f"rebind.example:{web.port}"
    assert calls == ["rebind.example"]


# -- redirects ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target", ["http://169.254.169.254/latest/meta-data/", "http://metadata.example/", "file:///etc/passwd"]
)
def test_a_redirect_to_a_refused_address_is_refused(web: FakeWeb, target: str) -> None:
    guard = RemoteGuard(LOOPBACK, resolver=resolver({"metadata.example": ["169.254.169.254"]}))
    redirect = web.url("/redirect?" + httpx2.QueryParams({"to": target}).__str__())
    with pytest.raises(RemoteRefusedError):
        run(guard.fetch(redirect))

    async def through_a_client() -> None:  # as the mcp SDK's clients follow redirects
        async with guard.client(follow_redirects=True) as client:
            await client.get(redirect)

    with pytest.raises((RemoteRefusedError, httpx2.UnsupportedProtocol)):
        run(through_a_client())


def test_redirects_are_followed_a_bounded_number_of_times(web: FakeWeb) -> None:
    before = web.requests.count("/redirect")
    with pytest.raises(RemoteFetchError) as caught:
        run(RemoteGuard(LOOPBACK).fetch(web.url("/redirect")))
    assert caught.value.code == "too_many_redirects"
    assert web.requests.count("/redirect") - before == LOOPBACK.max_redirects + 1
    # An allowed redirect is followed.
    fetched = run(RemoteGuard(LOOPBACK).fetch(web.url("/redirect?to=/pages/tides")))
    assert fetched.url == web.page_url("tides") and b"Spring tides" in fetched.body


def test_headers_meant_for_one_host_do_not_follow_a_redirect_to_another(web: FakeWeb) -> None:
    guard = RemoteGuard(LOOPBACK, resolver=resolver({"elsewhere.example": ["127.0.0.1"]}))
    elsewhere = f"http://elsewhere.example:{web.port}/headers"
    fetched = run(guard.fetch(web.url(f"/redirect?to={elsewhere}"), headers={"X-Subscription-Token": "k"}))
    seen = json.loads(fetched.body)
    assert seen["host"] == f"elsewhere.example:{web.port}" and "x-subscription-token" not in seen
    same_origin = run(guard.fetch(web.url("/redirect?to=/headers"), headers={"X-Subscription-Token": "k"}))
    assert json.loads(same_origin.body)["x-subscription-token"] == "k"


# -- size and time -----------------------------------------------------------------------------------


def small(max_bytes: int, timeout: float = 20.0) -> RemoteGuard:
    return RemoteGuard(RemotePolicy(LOOPBACK.allow_networks, max_bytes=max_bytes, timeout_seconds=timeout))


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/bytes?n=5000", "declared length"),
        ("/gzip?n=10000000", "inflated gzip"),
        ("/stream?n=5000", "streamed, no length"),
    ],
)
def test_an_oversized_body_is_cut_off(web: FakeWeb, path: str, why: str) -> None:
    with pytest.raises(RemoteFetchError) as caught:
        run(small(1000).fetch(web.url(path)))
    assert caught.value.code == "response_too_large", why
    assert "larger than 1000 bytes (THREADLINE_REMOTE_MAX_BYTES)" in caught.value.message
    assert run(small(5000).fetch(web.url("/bytes?n=5000"))).body == b"x" * 5000


def test_a_compressed_body_within_the_limit_is_decoded(web: FakeWeb) -> None:
    assert run(small(100_000).fetch(web.url("/gzip?n=50000"))).body == b"\0" * 50_000


def test_a_server_that_never_finishes_times_out(web: FakeWeb) -> None:
    with pytest.raises(RemoteFetchError) as caught:
        run(small(10_000_000, timeout=0.5).fetch(web.url("/trickle")))
    assert caught.value.code == "remote_timeout"
    assert "THREADLINE_REMOTE_TIMEOUT_SECONDS" in caught.value.message


def test_an_unreachable_port_fails_cleanly() -> None:
    with pytest.raises(RemoteFetchError, match="failed"):
        run(RemoteGuard(LOOPBACK).fetch("http://127.0.0.1:9/"))


# -- schemes, cookies, proxies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/x",
        "gopher://127.0.0.1:6379/_INFO",
        "dict://127.0.0.1:11211/stat",
        "data:text/plain,hi",
        "javascript:alert(1)",
        "http:///no-host",
        "not a url",
    ],
)
def test_only_http_and_https_urls_are_fetched(url: str) -> None:
    with pytest.raises(RemoteRefusedError) as caught:
        run(RemoteGuard(LOOPBACK).fetch(url))
    assert caught.value.code == "url_not_allowed"


def test_no_cookies_are_kept(web: FakeWeb) -> None:
    async def two_requests() -> dict[str, str]:
        async with RemoteGuard(LOOPBACK).client() as client:
            first = await client.get(web.url("/cookie"))
            assert "session=secret" in first.headers["set-cookie"]
            return dict((await client.get(web.url("/headers"))).json())

    assert "cookie" not in run(two_requests())


def test_proxies_from_the_environment_are_not_used(web: FakeWeb, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    assert run(RemoteGuard(LOOPBACK).fetch(web.page_url("kelp"))).status == 200


def test_the_mcp_client_factory_is_guarded_and_bounded(web: FakeWeb) -> None:
    guard = RemoteGuard(RemotePolicy(timeout_seconds=7))
    client = guard.httpx_client_factory(
        headers={"Authorization": "Bearer t"}, timeout=httpx2.Timeout(30, read=300)
    )
    assert isinstance(client, httpx2.AsyncClient)
    assert (client.timeout.connect, client.timeout.read) == (7, 300)
    assert client.headers["authorization"] == "Bearer t"

    async def get() -> None:
        async with client:
            await client.get(web.page_url("kelp"))

    with pytest.raises(RemoteRefusedError, match="loopback"):
        run(get())


# -- TLS: the connection is pinned to the address, the certificate checked for the name ---------------


def _certificates(directory: Path, name: str) -> tuple[ssl.SSLContext, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def make(subject: str, issuer: x509.Name | None, signer: Any, key: Any, ca: bool) -> x509.Certificate:
        subject_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject_name)
            .issuer_name(issuer or subject_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = make("Test CA", None, ca_key, ca_key, True)
    leaf = make(name, ca.subject, ca_key, leaf_key, False)
    cert, key = directory / "leaf.pem", directory / "leaf.key"
    cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return context, cert, key


def test_tls_names_the_host_while_the_connection_goes_to_the_checked_address(tmp_path: Path) -> None:
    context, cert, key = _certificates(tmp_path, "secure.example")
    with FakeWeb(ssl_certfile=str(cert), ssl_keyfile=str(key)) as secure:
        policy = RemotePolicy(allow_hosts=("secure.example",), allow_networks=LOOPBACK.allow_networks)
        names = {"secure.example": ["127.0.0.1"]}
        guard = RemoteGuard(policy, resolver=resolver(names), ssl_context=context)
        fetched = run(guard.fetch(f"https://secure.example:{secure.port}/headers"))
        assert json.loads(fetched.body)["host"] == f"secure.example:{secure.port}"
        # The same server by its address: the certificate does not name it, so TLS fails.
        with pytest.raises(RemoteFetchError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            run(guard.fetch(f"https://127.0.0.1:{secure.port}/headers"))
