"""Which addresses an outbound fetch may reach: the address classes refused by default (private,
loopback, link-local, metadata, unspecified, multicast, reserved; also inside IPv4-mapped, NAT64,
6to4 and IPv4-compatible IPv6) and the operator's exceptions (``THREADLINE_REMOTE_ALLOW``). Pure
rules, no I/O: ``guard.py`` applies them to every connection it makes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from threadline.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""Looks a host name up: its addresses, as strings. The seam where tests map names to addresses."""

SCHEMES = ("http", "https")
MAX_REDIRECTS = 5


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


def host_literal(host: str) -> IPAddress | None:
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
