"""Fetch one image URL politely and safely.

Per attempt: parse the URL; resolve the host (cached) and refuse addresses the policy forbids;
consult robots.txt (cached per host); send the request on a connection to the checked address,
holding one of the host's connection slots and keeping its minimum interval (`HostGate`, from
--per-host-connections, --per-host-rate and the host's Crawl-delay); follow redirects ourselves (limit, loop detection,
every hop re-checked); refuse X-Robots-Tag opt-outs from the headers, before the body; read the
body under a byte limit, aborting early if its first bytes are not an image. Transient failures
(timeouts, dropped connections, 429, 5xx) are retried with exponential backoff and jitter,
honouring Retry-After.
"""

from __future__ import annotations

import random
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from curation.download.address_policy import AddressPolicy
from curation.download.dns_cache import DnsCache
from curation.download.http_exchange import (
    ConnectionPool,
    Destination,
    Response,
    Timeouts,
    send_request,
)
from curation.download.politeness import HostGate, HostLimits
from curation.download.reasons import (
    BAD_URL,
    FORBIDDEN_ADDRESS,
    NOT_AN_IMAGE,
    REDIRECT_LOOP,
    TOO_MANY_REDIRECTS,
    UNSUPPORTED_SCHEME,
    X_ROBOTS_TAG,
    DownloadFailure,
    http_reason,
    is_transient,
)
from curation.download.robots import (
    DEFAULT_OPT_OUT_DIRECTIVES,
    ROBOTS_MAX_BYTES,
    RobotsCache,
    RobotsRules,
    rules_from_response,
    x_robots_tag_forbids,
)
from curation.download.sniff import sniff_image_format

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class FetchConfig:
    user_agent_token: str = "openvision"
    allow_networks: tuple[str, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_bytes: int = 16 * 1024 * 1024
    max_redirects: int = 5
    retries: int = 2
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    per_host_connections: int = 16
    per_host_requests_per_s: float = 0.0  # 0: only robots.txt's Crawl-delay paces a host
    respect_robots_txt: bool = True
    opt_out_directives: frozenset[str] = DEFAULT_OPT_OUT_DIRECTIVES

    @property
    def host_limits(self) -> HostLimits:
        return HostLimits(self.per_host_connections, self.per_host_requests_per_s)

    @property
    def user_agent(self) -> str:
        return (
            f"Mozilla/5.0 (compatible; {self.user_agent_token}/1.0; image dataset research crawler)"
        )


@dataclass
class FetchResult:
    body: bytes
    final_url: str
    host: str
    image_format: str | None
    attempts: int
    redirects: int
    retried_reasons: list[str] = field(default_factory=list)  # transient failures overcome


def parse_url(url: str) -> urllib.parse.SplitResult:
    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise DownloadFailure(BAD_URL, f"{url!r}: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise DownloadFailure(UNSUPPORTED_SCHEME, f"{url!r}")
    if not parts.hostname:
        raise DownloadFailure(BAD_URL, f"{url!r} has no host")
    return parts


def origin_of(parts: urllib.parse.SplitResult) -> str:
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{host}:{port}"


def retry_after_seconds(response: Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Fetcher:
    """Thread-safe: one instance serves all worker threads of a process, and its DNS, robots.txt
    and keep-alive caches outlive a task. Politeness belongs to the task that owns the hosts: pass
    its `HostGate` to `fetch` (without one, the fetcher's own gate applies the configured limits)."""

    def __init__(self, config: FetchConfig, *, dns: DnsCache | None = None, seed: int = 0):
        self.config = config
        self.policy = AddressPolicy.from_cidrs(config.allow_networks)
        self.dns = dns or DnsCache()
        self.robots = RobotsCache(
            lambda robots_url: self._fetch_robots_rules(robots_url, self.gate),
            config.user_agent_token,
        )
        self.gate = HostGate(config.host_limits)
        self.connections = ConnectionPool()
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.request_headers = {"User-Agent": config.user_agent, "Accept": "image/*,*/*;q=0.5"}

    def fetch(self, url: str, gate: HostGate | None = None) -> FetchResult:
        """The image bytes behind `url`; raises DownloadFailure with the reason otherwise."""
        gate = gate or self.gate
        retried: list[str] = []
        while True:
            try:
                result = self._fetch_following_redirects(url, gate, for_image=True)
                result.attempts, result.retried_reasons = len(retried) + 1, retried
                return result
            except DownloadFailure as failure:
                wait = None
                if len(retried) < self.config.retries and is_transient(failure.reason):
                    wait = self._backoff_s(len(retried) + 1, failure.retry_after)
                if wait is None:
                    failure.retried_reasons = retried
                    raise
                retried.append(failure.reason)
                time.sleep(wait)

    def _backoff_s(self, attempt: int, retry_after: float | None) -> float | None:
        """Exponential backoff with full jitter; None when the server asks us to wait too long."""
        if retry_after is not None:
            return retry_after if retry_after <= self.config.backoff_max_s else None
        ceiling = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (attempt - 1))
        with self._rng_lock:
            return ceiling * (0.5 + 0.5 * self._rng.random())

    def destination(self, url: str) -> tuple[Destination, urllib.parse.SplitResult]:
        """Resolve `url`'s host and pick an address the policy allows (else refuse)."""
        parts = parse_url(url)
        addresses = self.dns.resolve(parts.hostname)
        allowed = [address for address in addresses if self.policy.allows(address)]
        if not allowed:
            category = self.policy.refusal(addresses[0])
            raise DownloadFailure(
                FORBIDDEN_ADDRESS, f"{parts.hostname} -> {addresses[0]} ({category})"
            )
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return Destination(
            parts.scheme,
            parts.hostname,
            parts.port or DEFAULT_PORTS[parts.scheme],
            allowed[0],
            path,
        ), parts

    def _fetch_following_redirects(
        self, url: str, gate: HostGate, *, for_image: bool
    ) -> FetchResult:
        seen = {url}
        current = url
        for hop in range(self.config.max_redirects + 1):
            destination, parts = self.destination(current)
            crawl_delay_s = 0.0
            if for_image and self.config.respect_robots_txt:
                rules = self.robots.rules_for(
                    origin_of(parts), lambda robots_url: self._fetch_robots_rules(robots_url, gate)
                )
                refusal = rules.refusal(current, self.config.user_agent_token)
                if refusal is not None:
                    raise DownloadFailure(refusal, current)
                crawl_delay_s = rules.min_interval_s(self.config.user_agent_token)
            with gate.hold(destination.host, crawl_delay_s):
                # The deadline starts once the gate admits us: waiting for a slot is not the
                # server's slowness.
                deadline = time.monotonic() + self.config.timeouts.total_s
                response = send_request(
                    self.connections,
                    destination,
                    self.request_headers,
                    self.config.timeouts,
                    deadline,
                )
                if response.status in REDIRECT_STATUSES:
                    location = response.headers.get("Location")
                    response.discard()
                    if not location:
                        raise DownloadFailure(
                            http_reason(response.status), "redirect without Location"
                        )
                    current = urllib.parse.urljoin(current, location.strip())
                    if current in seen:
                        raise DownloadFailure(REDIRECT_LOOP, f"back to {current}")
                    seen.add(current)
                    continue
                if not 200 <= response.status < 300:
                    retry_after = retry_after_seconds(response)
                    response.discard()
                    raise DownloadFailure(
                        http_reason(response.status), current, retry_after=retry_after
                    )
                return self._read(response, current, hop, for_image)
        raise DownloadFailure(
            TOO_MANY_REDIRECTS, f"more than {self.config.max_redirects} from {url}"
        )

    def _read(self, response: Response, url: str, hops: int, for_image: bool) -> FetchResult:
        if not for_image:
            return FetchResult(
                response.read_body(ROBOTS_MAX_BYTES), url, response.destination.host, None, 1, hops
            )
        if x_robots_tag_forbids(
            response.header_values("X-Robots-Tag"),
            self.config.user_agent_token,
            self.config.opt_out_directives,
        ):
            response.close()  # hang up: we never read the body of an opted-out image
            raise DownloadFailure(X_ROBOTS_TAG, url)
        sniffed: list[str] = []

        def require_image(head: bytes) -> None:
            image_format = sniff_image_format(head)
            if image_format is None:
                raise DownloadFailure(NOT_AN_IMAGE, f"starts with {head[:12]!r}")
            sniffed.append(image_format)

        body = response.read_body(self.config.max_bytes, inspect_head=require_image)
        return FetchResult(body, url, response.destination.host, sniffed[0], 1, hops)

    def _fetch_robots_rules(self, robots_url: str, gate: HostGate) -> RobotsRules:
        try:
            result = self._fetch_following_redirects(robots_url, gate, for_image=False)
        except DownloadFailure as failure:  # a robots.txt we cannot read (even a forbidden hop)
            return rules_from_response(None, b"", failure)
        return rules_from_response(200, result.body, None)
