"""Per-host politeness inside one download shard: a connection limit and a minimum request interval.

These limits hold for the whole cluster because the download plan gives every host to one shard
(see `curation.download.plan`), downloaded under its own gate by one task: no other shard,
process or machine sends that host a request. A giant host is split into k sub-partitions, each
in its own shard, and each of them gets 1/k of the host's limits here (also when one task holds
several of them), so the host still sees at most `connections` requests at a time (when
k <= connections) and at most `requests_per_s` requests a second.

The interval between two request starts to one host is the larger of 1 / `requests_per_s` and
the host's robots.txt Crawl-delay (or Request-rate), times k. Starts are spaced by at least that
interval, so any window of W seconds holds at most W / interval + 1 of them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class HostLimits:
    connections: int = 16  # simultaneous requests per host
    requests_per_s: float = 0.0  # 0: no limit but the host's own Crawl-delay

    def __post_init__(self) -> None:
        if self.connections < 1 or self.requests_per_s < 0:
            raise ValueError(
                f"per-host limits need connections >= 1 and requests/s >= 0, got {self}"
            )


class _HostState:
    def __init__(self, connections: int):
        self.slots = threading.BoundedSemaphore(connections)
        self.pace_lock = threading.Lock()
        self.next_start = 0.0


class HostGate:
    """Admits requests to each host under its share of the limits; thread-safe.

    `parts` maps a host to the number of sub-partitions it was split into (1 if absent).
    """

    def __init__(self, limits: HostLimits, parts: Mapping[str, int] | None = None):
        self.limits = limits
        self.parts = dict(parts or {})
        self._hosts: dict[str, _HostState] = {}
        self._lock = threading.Lock()

    def connections_for(self, host: str) -> int:
        return max(1, self.limits.connections // self.parts.get(host, 1))

    def interval_s(self, host: str, crawl_delay_s: float = 0.0) -> float:
        """Seconds between two request starts to `host` from this task."""
        rate_interval = 1.0 / self.limits.requests_per_s if self.limits.requests_per_s else 0.0
        return max(rate_interval, crawl_delay_s) * self.parts.get(host, 1)

    @contextlib.contextmanager
    def hold(self, host: str, crawl_delay_s: float = 0.0) -> Iterator[None]:
        """Wait for a free connection slot and for the host's next start time; hold the slot."""
        with self._lock:
            state = self._hosts.get(host)
            if state is None:
                state = self._hosts[host] = _HostState(self.connections_for(host))
        with state.slots:
            interval = self.interval_s(host, crawl_delay_s)
            if interval > 0:
                with state.pace_lock:
                    wait = state.next_start - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    state.next_start = time.monotonic() + interval
            yield
