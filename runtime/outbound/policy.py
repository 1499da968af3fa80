"""What functions may reach over HTTP: the address rules and `FERRY_OUTBOUND_ALLOW`.

Refused unless allow-listed: loopback, private (RFC 1918, CGNAT, unique-local),
link-local (`169.254.169.254` is the cloud metadata service), multicast, unspecified
and any other address that is not globally routable; IPv6 forms that carry an IPv4
address (mapped, 6to4, NAT64, Teredo) are judged by that address. The documentation
ranges (TEST-NET, `2001:db8::/32`) count as public: nothing routes them.

An allow-list entry is a CIDR or address, or a host name, with an optional port:
`10.1.0.0/16`, `hooks.internal:8443`, `[::1]:9000`. A host name permits whatever it
resolves to (the operator trusts its DNS).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog
from urllib3.util.connection import allowed_gai_family

from runtime.errors import OutboundRefused

if TYPE_CHECKING:
    from runtime.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_ALLOW_HINT = "FERRY_OUTBOUND_ALLOW to permit"
_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")
#: RFC 1918, CGNAT (100.64/10), unique-local and the deprecated site-local IPv6 range.
_PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
) + tuple(ipaddress.ip_network(n) for n in ("fc00::/7", "fec0::/10"))
#: Never routed on the internet, so harmless; tests use them as stand-ins for it.
_DOCUMENTATION = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")

log = structlog.get_logger("ferry.outbound")


@dataclasses.dataclass(frozen=True)
class AllowEntry:
    """One `FERRY_OUTBOUND_ALLOW` entry: a network or a host name, on one port or any."""

    network: IPNetwork | None = None
    host: str | None = None
    port: int | None = None

    def permits_host(self, host: str, port: int) -> bool:
        return self.host == host and self.port in (None, port)

    def permits_address(self, address: IPAddress, port: int) -> bool:
        return (
            self.network is not None
            and address.version == self.network.version
            and address in self.network
            and self.port in (None, port)
        )


def parse_allow_entry(text: str) -> AllowEntry:
    """One allow-list entry (`10.0.0.0/8`, `[::1]:8080`, `hooks.internal:443`); ValueError."""
    entry = text.strip().lower()
    port: str | None = None
    if entry.startswith("["):
        inside, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected [address]:port")
        entry, port = inside, rest[1:] or None
    elif entry.count(":") == 1:
        entry, port = entry.split(":")
    number = None
    if port is not None:
        if not port.isdigit() or not 0 < int(port) < 65_536:
            raise ValueError(f"{text!r}: the port must be 1 to 65535")
        number = int(port)
    try:
        return AllowEntry(network=ipaddress.ip_network(entry, strict=False), port=number)
    except ValueError:
        pass
    host = entry.rstrip(".")
    if not host or len(host) > 253 or not _HOST_NAME.match(host) or host.isdigit():
        raise ValueError(f"{text!r} is neither a CIDR, an address nor a host name")
    return AllowEntry(host=host, port=number)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, NAT64, 6to4, Teredo, compatible)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def refusal_rule(address: IPAddress) -> str | None:
    """Why `address` is internal ("a private address"), or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        carried = _embedded_ipv4(address)
        if carried is not None:
            return refusal_rule(carried)
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if any(address in net for net in _PRIVATE if net.version == address.version):
        return "a private address"
    if not address.is_global and not any(
        address in net for net in _DOCUMENTATION if net.version == address.version
    ):
        return "a reserved address"
    return None


@dataclasses.dataclass(frozen=True)
class OutboundPolicy:
    """What `ctx.http` may reach and how long and how much it reads (from `Settings`)."""

    allow: tuple[AllowEntry, ...] = ()
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 20.0
    max_response_bytes: int = 10 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        return cls(
            allow=tuple(parse_allow_entry(e) for e in settings.outbound_allow),
            connect_timeout_s=settings.outbound_connect_timeout_s,
            read_timeout_s=settings.outbound_read_timeout_s,
            max_response_bytes=settings.outbound_max_response_bytes,
        )

    def check_url(self, url: str) -> None:
        """Refuse a scheme other than http(s), credentials in the URL, or no host."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise OutboundRefused(f"refused: the {parts.scheme!r} scheme; only http and https")
        if "@" in parts.netloc:
            raise OutboundRefused(
                "refused: credentials in the URL (user:password@) are not sent; use a header"
            )
        if not parts.hostname:
            raise OutboundRefused("refused: the URL has no host")

    def resolve(self, host: str, port: int) -> list[tuple[int, Any]]:
        """Resolve `host` and check every address; (family, sockaddr) pairs to connect to.

        Raises:
            OutboundRefused: an address is internal and not allow-listed.
            socket.gaierror: the name does not resolve.
        """
        name = host.strip("[]").rstrip(".").lower()
        trusted = any(entry.permits_host(name, port) for entry in self.allow)
        found = socket.getaddrinfo(name, port, allowed_gai_family(), socket.SOCK_STREAM)
        targets: list[tuple[int, Any]] = []
        for family, _type, _proto, _canonical, sockaddr in found:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
            if not trusted:
                self._check_address(name, address, port)
            targets.append((family, sockaddr))
        return targets

    def _check_address(self, name: str, address: IPAddress, port: int) -> None:
        rule = refusal_rule(address)
        if rule is None or any(e.permits_address(address, port) for e in self.allow):
            return
        carried = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
        if carried is not None and any(e.permits_address(carried, port) for e in self.allow):
            return
        log.warning("outbound_refused", host=name, address=str(address), port=port, rule=rule)
        # A name's address is not echoed: the caller must not learn the internal DNS.
        subject = f"{name} is" if _is_address(name) else f"{name} resolves to"
        raise OutboundRefused(f"refused: {subject} {rule} ({_ALLOW_HINT})")
