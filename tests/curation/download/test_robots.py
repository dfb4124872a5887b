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


# RFC 9309, section 5.1 ("Simple Example"), verbatim.
RFC_9309_EXAMPLE = """User-Agent: *
Disallow: *.gif$
Disallow: /example/
Allow: /publications/

User-Agent: foobot
Disallow:/
Allow:/example/page.html
Allow:/example/allowed.gif

User-Agent: barbot
User-Agent: bazbot
Disallow: /example/page.html

User-Agent: quxbot

EOF
"""


@pytest.mark.parametrize(
    "agent, path, allowed",
    [
        # foobot's own group: everything refused but the two allowed paths.
        ("foobot", "/example/page.html", True),
        ("foobot", "/example/allowed.gif", True),
        ("foobot", "/publications/a.html", False),
        ("foobot", "/other.gif", False),
        # barbot and bazbot share one group; the * group no longer applies to them.
        ("barbot", "/example/page.html", False),
        ("bazbot", "/example/page.html", False),
        ("barbot", "/example/other.gif", True),
        # quxbot's group is empty: everything allowed.
        ("quxbot", "/example/page.html", True),
        # Anyone else: the * group, with its $ anchored wildcard.
        ("otherbot", "/a/b.gif", False),
        ("otherbot", "/a/b.gif?size=2", True),
        ("otherbot", "/example/page.html", False),
        ("otherbot", "/publications/a.html", True),
        ("otherbot", "/index.html", True),
    ],
)
def test_rfc_9309_simple_example(agent, path, allowed):
    verdict = RobotsRules.from_text(RFC_9309_EXAMPLE).refusal(f"http://h{path}", agent)
    assert (verdict is None) is allowed


LONGEST_MATCH = (
    "User-Agent: foobot\nAllow: /example/page/\nDisallow: /example/page/disallowed.gif\n"
)
EXACTLY = "User-Agent: *\nDisallow: /\nAllow: /this/path/exactly$\n"
IMAGES_ONLY = "User-agent: *\nDisallow: /\nAllow: /images/\n"
NO_JPEG = "User-agent: *\nDisallow: /*.jpg$\n"


@pytest.mark.parametrize(
    "robots, path, allowed",
    [
        # RFC 9309 section 5.2, longest match: the longer Disallow beats the shorter Allow.
        (LONGEST_MATCH, "/example/page/disallowed.gif", False),
        (LONGEST_MATCH, "/example/page/other.gif", True),
        # Section 2.2.2: an Allow and a Disallow of equal length: the Allow wins.
        ("User-Agent: *\nDisallow: /p\nAllow: /p\n", "/p", True),
        # Section 2.2.3's special characters: $ ends the pattern, * matches any run.
        (EXACTLY, "/this/path/exactly", True),
        (EXACTLY, "/this/path/exactly/", False),
        ("User-Agent: *\nDisallow: /\nAllow: /this/*/exactly\n", "/this/a/b/exactly", True),
        # Section 2.2.2: a UTF-8 path in the file matches its percent-encoded form.
        ("User-Agent: *\nDisallow: /foo/bar/\u30c4\n", "/foo/bar/%E3%83%84", False),
        # User-agent names match case-insensitively.
        ("User-Agent: FooBot\nDisallow: /a\n", "/a", False),
        # Issue 20's two cases, which urllib.robotparser got wrong.
        (IMAGES_ONLY, "/images/a.jpg", True),
        (IMAGES_ONLY, "/a.jpg", False),
        (NO_JPEG, "/a.jpg", False),
        (NO_JPEG, "/img/a.jpg", False),
        (NO_JPEG, "/a.jpg.html", True),
    ],
)
def test_rules_follow_rfc_9309_matching(robots, path, allowed):
    assert (RobotsRules.from_text(robots).refusal(f"http://h{path}", "foobot") is None) is allowed


@pytest.mark.parametrize(
    "robots, interval",
    [
        ("User-agent: *\nCrawl-delay: 2.5\n", 2.5),
        ("User-agent: *\nRequest-rate: 1/4s\n", 4.0),
        ("User-agent: foobot\nCrawl-delay: 3\n\nUser-agent: *\nCrawl-delay: 9\n", 3.0),
        ("User-agent: *\nDisallow: /x\n", 0.0),
    ],
)
def test_crawl_delay_and_request_rate_become_the_min_interval(robots, interval):
    assert RobotsRules.from_text(robots).min_interval_s("foobot") == interval
    assert RobotsRules.allow_all().min_interval_s("foobot") == 0.0


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
