"""Which IP addresses the downloader may connect to.

A URL on the web can point at the machine itself or its private network (a cloud metadata
service, an admin page); a crawler that follows it is a server-side request forgery tool. We
resolve every host ourselves, refuse any address that is not globally routable unless it lies
inside an explicitly allowed network, and connect to exactly the address we checked (so a second
DNS answer cannot swap it), at every redirect hop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# IPv6 prefixes that carry an IPv4 address a router will forward to: judge the embedded address.
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse `--allow-network` values; a malformed one is a configuration error."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError as exc:
            raise ValueError(f"--allow-network {cidr!r} is not a CIDR network: {exc}") from None
    return tuple(networks)


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64, Teredo), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.teredo is not None:
        return address.teredo[1]
    return None


def refusal_category(address: IPAddress) -> str | None:
    """Why `address` is not a public destination ("loopback", "private", ...), or None if it is."""
    inner = embedded_ipv4(address)
    if inner is not None:
        return refusal_category(inner)
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link_local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        # Shared address space (100.64/10), documentation ranges and the like are neither private
        # nor reserved in `ipaddress`, yet not reachable on the public internet either.
        ("not_global", not address.is_global),
    )
    for category, applies in checks:
        if applies:
            return category
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses are allowed; others only inside `allowed_networks`."""

    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str]) -> AddressPolicy:
        return cls(parse_networks(cidrs))

    def refusal(self, address: str | IPAddress) -> str | None:
        """None if we may connect to `address`; otherwise the category that forbids it."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        inner = embedded_ipv4(ip)
        for candidate in (ip, inner):
            if candidate is not None and any(
                candidate.version == net.version and candidate in net
                for net in self.allowed_networks
            ):
                return None
        return refusal_category(ip)

    def allows(self, address: str | IPAddress) -> bool:
        return self.refusal(address) is None
