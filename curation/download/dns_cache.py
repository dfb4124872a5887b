"""A thread-safe DNS cache: each host is resolved once per TTL, failures too (briefly).

Web image lists hit the same few thousand hosts millions of times; asking the resolver every
time is slow and, at scale, the main source of spurious failures.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass

from curation.download.address_policy import IPAddress
from curation.download.reasons import DNS_ERROR, DownloadFailure


@dataclass
class _Entry:
    addresses: tuple[IPAddress, ...]
    error: str | None
    expires_at: float


class DnsCache:
    def __init__(self, ttl_s: float = 300.0, negative_ttl_s: float = 30.0):
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self._entries: dict[str, _Entry] = {}
        self._host_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.lookups = 0

    def resolve(self, host: str) -> tuple[IPAddress, ...]:
        """The addresses of `host` (an IP literal resolves to itself); raises DownloadFailure."""
        try:
            return (ipaddress.ip_address(host.strip("[]")),)
        except ValueError:
            pass
        entry = self._fresh_entry(host)
        if entry is None:
            with self._lock:
                host_lock = self._host_locks.setdefault(host, threading.Lock())
            with host_lock:  # one lookup per host even when many workers ask at once
                entry = self._fresh_entry(host)
                if entry is None:
                    entry = self._lookup(host)
                    with self._lock:
                        self._entries[host] = entry
        if entry.error is not None:
            raise DownloadFailure(DNS_ERROR, f"{host}: {entry.error}")
        return entry.addresses

    def _fresh_entry(self, host: str) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(host)
        if entry is not None and entry.expires_at > time.monotonic():
            return entry
        return None

    def _lookup(self, host: str) -> _Entry:
        self.lookups += 1
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError) as exc:
            return _Entry(
                (), str(exc) or type(exc).__name__, time.monotonic() + self.negative_ttl_s
            )
        addresses: list[IPAddress] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = ipaddress.ip_address(sockaddr[0].split("%")[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            return _Entry((), "no address", time.monotonic() + self.negative_ttl_s)
        return _Entry(tuple(addresses), None, time.monotonic() + self.ttl_s)
