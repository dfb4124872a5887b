import threading
import time

import pytest

from curation.download.reasons import ROBOTS_DISALLOWED, ROBOTS_UNREACHABLE, DownloadFailure
from curation.download.robots import (
    RobotsCache,
    RobotsRules,
    rules_from_response,
    x_robots_tag_forbids,
)

ROBOTS = """
User-agent: *
Disallow: /private/

User-agent: openvision
Disallow: /private/
Disallow: /no-ai/
"""


def test_rules_honour_our_token_and_fall_back_to_star():
    rules = RobotsRules.from_text(ROBOTS)
    assert rules.refusal("http://h/no-ai/a.jpg", "openvision") == ROBOTS_DISALLOWED
    assert rules.refusal("http://h/private/a.jpg", "openvision") == ROBOTS_DISALLOWED
    assert rules.refusal("http://h/no-ai/a.jpg", "otherbot") is None
    assert rules.refusal("http://h/private/a.jpg", "otherbot") == ROBOTS_DISALLOWED
    assert rules.refusal("http://h/public/a.jpg", "openvision") is None


@pytest.mark.parametrize(
    "status, failure, verdict",
    [
        (200, None, None),
        (None, DownloadFailure("http_404"), None),  # no robots.txt: no rules
        (None, DownloadFailure("http_403"), None),
        (None, DownloadFailure("http_503"), ROBOTS_UNREACHABLE),
        (None, DownloadFailure("timeout"), ROBOTS_UNREACHABLE),
        (None, DownloadFailure("too_many_redirects"), None),
    ],
)
def test_robots_fetch_outcomes_follow_rfc_9309(status, failure, verdict):
    rules = rules_from_response(status, b"User-agent: *\nDisallow: /x/\n", failure)
    assert rules.refusal("http://h/a.jpg", "openvision") == verdict


def test_cache_fetches_each_origin_once_under_concurrency():
    fetched = []

    def slow_fetch(url):
        fetched.append(url)
        time.sleep(0.2)
        return RobotsRules.from_text(ROBOTS)

    cache = RobotsCache(slow_fetch, "openvision")
    verdicts = []
    threads = [
        threading.Thread(
            target=lambda: verdicts.append(cache.refusal("http://a:80", "http://a/no-ai/x.jpg"))
        )
        for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fetched == ["http://a:80/robots.txt"]
    assert verdicts == [ROBOTS_DISALLOWED] * 16
    assert cache.refusal("http://b:80", "http://b/x.jpg") is None
    assert fetched == ["http://a:80/robots.txt", "http://b:80/robots.txt"] and cache.fetches == 2


@pytest.mark.parametrize(
    "values, forbids",
    [
        (["noai"], True),
        (["noindex, nofollow"], True),
        (["NoImageAI"], True),
        (["noimageindex"], True),
        (["nofollow, noarchive"], False),
        (["otherbot: noindex"], False),
        (["openvision: noai"], True),
        (["otherbot: noindex, openvision: noimageai"], True),
        (["otherbot: noindex, nofollow"], False),
        (["unavailable_after: 25 Jun 2010 15:00:00 PST"], False),
        (["nofollow", "noai"], True),
        ([], False),
    ],
)
def test_x_robots_tag_parsing(values, forbids):
    assert x_robots_tag_forbids(values, "openvision") is forbids
