"""Publishers' opt-outs: robots.txt (fetched once per host) and the X-Robots-Tag header.

robots.txt follows RFC 9309: a 2xx body is parsed by Protego (Scrapy's RFC 9309 parser: the
longest matching rule wins, an Allow wins a tie, `*` and `$` are wildcards, the groups naming our
user-agent token replace the `*` group) and honoured for our token; a 4xx means there are no
rules; a 5xx or an unreachable server means "crawl nothing" for now (recorded as the transient
`robots_unreachable`, so `--retry-failed` tries again). A Crawl-delay or Request-rate for our token
becomes the host's minimum interval between requests (see `curation.download.politeness`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from protego import Protego

from curation.download.reasons import ROBOTS_DISALLOWED, ROBOTS_UNREACHABLE, DownloadFailure

ROBOTS_MAX_BYTES = 512 * 1024  # RFC 9309 asks crawlers to parse at least 500 KiB
DEFAULT_OPT_OUT_DIRECTIVES = frozenset({"noai", "noimageai", "noindex", "noimageindex"})
# X-Robots-Tag directives that carry a value after a colon (so the colon names no user agent).
VALUED_DIRECTIVES = frozenset(
    {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}
)


@dataclass(frozen=True)
class RobotsRules:
    """The parsed rules of one host, or a blanket verdict when there is no usable file."""

    parser: Protego | None
    blanket_refusal: str | None = None  # set when the file could not be fetched (5xx, network)

    @classmethod
    def from_text(cls, text: str) -> RobotsRules:
        return cls(Protego.parse(text))

    @classmethod
    def allow_all(cls) -> RobotsRules:
        return cls(None)

    def refusal(self, url: str, user_agent_token: str) -> str | None:
        if self.blanket_refusal is not None:
            return self.blanket_refusal
        if self.parser is None or self.parser.can_fetch(url, user_agent_token):
            return None
        return ROBOTS_DISALLOWED

    def min_interval_s(self, user_agent_token: str) -> float:
        """Seconds the file asks between two requests (Crawl-delay, or Request-rate n/s); 0 if none."""
        if self.parser is None:
            return 0.0
        delay = self.parser.crawl_delay(user_agent_token) or 0.0
        rate = self.parser.request_rate(user_agent_token)
        if rate is not None and rate.requests > 0:
            delay = max(delay, rate.seconds / rate.requests)
        return max(0.0, float(delay))


def rules_from_response(
    status: int | None, body: bytes, failure: DownloadFailure | None
) -> RobotsRules:
    """Turn the outcome of fetching /robots.txt into rules, per RFC 9309 section 2.3.1."""
    if failure is not None and failure.reason.startswith("http_"):
        status = int(failure.reason[5:])
    if status is not None and 200 <= status < 300:
        return RobotsRules.from_text(body.decode("utf-8", errors="replace"))
    if status is not None and 400 <= status < 500:
        return RobotsRules.allow_all()
    if failure is not None and failure.reason in ("too_many_redirects", "redirect_loop"):
        return RobotsRules.allow_all()  # RFC: give up after 5 redirects and treat as unavailable
    return RobotsRules(None, blanket_refusal=ROBOTS_UNREACHABLE)


RobotsFetch = Callable[[str], RobotsRules]


class RobotsCache:
    """Per-host rules, fetched at most once per TTL even when many threads ask at the same time."""

    def __init__(self, fetch_rules: RobotsFetch, user_agent_token: str, ttl_s: float = 24 * 3600.0):
        self._fetch_rules = fetch_rules
        self.user_agent_token = user_agent_token
        self.ttl_s = ttl_s
        self._rules: dict[str, tuple[RobotsRules, float]] = {}
        self._origin_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def refusal(self, origin: str, url: str) -> str | None:
        """None if robots.txt of `origin` ("scheme://host:port") lets us fetch `url`."""
        return self.rules_for(origin).refusal(url, self.user_agent_token)

    def rules_for(self, origin: str, fetch_rules: RobotsFetch | None = None) -> RobotsRules:
        """The rules of `origin`; on a miss, fetched with `fetch_rules` (default: the cache's)."""
        cached = self._cached(origin)
        if cached is not None:
            return cached
        with self._lock:
            origin_lock = self._origin_locks.setdefault(origin, threading.Lock())
        with origin_lock:
            cached = self._cached(origin)
            if cached is None:
                self.fetches += 1
                cached = (fetch_rules or self._fetch_rules)(origin + "/robots.txt")
                with self._lock:
                    self._rules[origin] = (cached, time.monotonic() + self.ttl_s)
        return cached

    def _cached(self, origin: str) -> RobotsRules | None:
        with self._lock:
            entry = self._rules.get(origin)
        if entry is not None and entry[1] > time.monotonic():
            return entry[0]
        return None


def x_robots_tag_forbids(
    values: Iterable[str],
    user_agent_token: str,
    directives: frozenset[str] = DEFAULT_OPT_OUT_DIRECTIVES,
) -> bool:
    """Whether X-Robots-Tag header values opt out of our use.

    Items are comma-separated; `agent: directive` scopes that item and the ones after it to an
    agent (as in "X-Robots-Tag: otherbot: noindex, nofollow"). Unscoped items apply to everyone.
    """
    token = user_agent_token.lower()
    for value in values:
        scope: str | None = None
        for item in value.split(","):
            item = item.strip().lower()
            if not item:
                continue
            name, colon, rest = item.partition(":")
            if colon and name.strip() not in VALUED_DIRECTIVES:
                scope, item = name.strip(), rest.strip()
            if item in directives and scope in (None, "*", token):
                return True
    return False
