"""The fetcher against a planted web on 127.0.0.1 (and a 'forbidden' one on 127.0.0.2)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from planted_web import PlantedWeb, Route

from curation.download.fetcher import FetchConfig, Fetcher
from curation.download.http_exchange import Timeouts
from curation.download.reasons import DownloadFailure

ALLOW_TEST_SERVER = ("127.0.0.1/32",)


def make_fetcher(**overrides) -> Fetcher:
    settings = {
        "allow_networks": ALLOW_TEST_SERVER,
        "backoff_base_s": 0.05,
        "backoff_max_s": 2.0,
        "timeouts": Timeouts(connect_s=2.0, read_s=2.0, total_s=5.0),
    }
    settings.update(overrides)
    return Fetcher(FetchConfig(**settings))


def failure_reason(fetcher: Fetcher, url: str) -> str:
    with pytest.raises(DownloadFailure) as caught:
        fetcher.fetch(url)
    return caught.value.reason


def test_fetches_an_image_and_sniffs_its_format(web, small_jpeg):
    result = make_fetcher().fetch(web.plant("/a.jpg", Route(small_jpeg, content_type="text/html")))
    assert result.body == small_jpeg and result.image_format == "jpeg" and result.attempts == 1


def test_transient_503_is_retried_with_backoff_then_succeeds(web, small_jpeg):
    url = web.plant("/flaky.jpg", Route(small_jpeg, fail_first=2, fail_status=503))
    result = make_fetcher(retries=2).fetch(url)
    assert result.body == small_jpeg and result.attempts == 3
    assert result.retried_reasons == ["http_503", "http_503"]
    assert web.hits("/flaky.jpg") == 3


def test_429_waits_for_retry_after(web, small_jpeg):
    url = web.plant("/busy.jpg", Route(small_jpeg, fail_first=1, fail_status=429, retry_after="1"))
    started = time.monotonic()
    result = make_fetcher(retries=1).fetch(url)
    assert result.attempts == 2 and time.monotonic() - started >= 1.0


def test_retry_after_beyond_the_backoff_cap_gives_up_at_once(web, small_jpeg):
    url = web.plant(
        "/later.jpg", Route(small_jpeg, fail_first=1, fail_status=429, retry_after="3600")
    )
    assert failure_reason(make_fetcher(retries=3), url) == "http_429"
    assert web.hits("/later.jpg") == 1


def test_persistent_500_fails_after_the_retries(web):
    url = web.plant("/broken.jpg", Route(b"oops", status=500))
    assert failure_reason(make_fetcher(retries=2), url) == "http_500"
    assert web.hits("/broken.jpg") == 3


def test_404_is_not_retried(web):
    assert failure_reason(make_fetcher(retries=3), web.url("/missing.jpg")) == "http_404"
    assert web.hits("/missing.jpg") == 1


def test_slow_headers_time_out(web, small_jpeg):
    url = web.plant("/slow.jpg", Route(small_jpeg, delay_headers_s=1.5))
    fetcher = make_fetcher(retries=0, timeouts=Timeouts(connect_s=1.0, read_s=0.3, total_s=5.0))
    assert failure_reason(fetcher, url) == "timeout"


def test_total_deadline_bounds_a_trickling_body(web, small_jpeg):
    url = web.plant("/trickle.jpg", Route(small_jpeg, delay_body_s=1.5))
    fetcher = make_fetcher(retries=0, timeouts=Timeouts(connect_s=1.0, read_s=5.0, total_s=0.5))
    started = time.monotonic()
    assert failure_reason(fetcher, url) == "timeout"
    assert time.monotonic() - started < 1.4


def test_x_robots_tag_refuses_before_reading_the_body(web, small_jpeg):
    # The body comes only after 3 s: a fetcher that read it could not return in under 1.5 s.
    url = web.plant(
        "/optout.jpg", Route(small_jpeg * 50, headers={"X-Robots-Tag": "noai"}, delay_body_s=3.0)
    )
    started = time.monotonic()
    assert failure_reason(make_fetcher(), url) == "x_robots_tag"
    assert time.monotonic() - started < 1.5


def test_x_robots_tag_for_another_agent_is_ignored(web, small_jpeg):
    url = web.plant("/other.jpg", Route(small_jpeg, headers={"X-Robots-Tag": "otherbot: noai"}))
    assert make_fetcher().fetch(url).body == small_jpeg


def test_redirects_are_followed_and_loops_detected(web, small_jpeg):
    web.plant("/final.jpg", Route(small_jpeg))
    web.plant("/hop2", Route(redirect_to="/final.jpg", redirect_status=301))
    chain = web.plant("/hop1", Route(redirect_to=web.url("/hop2")))
    result = make_fetcher().fetch(chain)
    assert (
        result.body == small_jpeg
        and result.redirects == 2
        and result.final_url == web.url("/final.jpg")
    )

    web.plant("/loop-a", Route(redirect_to="/loop-b"))
    loop = web.plant("/loop-b", Route(redirect_to="/loop-a"))
    assert failure_reason(make_fetcher(), loop) == "redirect_loop"
    for index in range(8):
        web.plant(f"/r{index}", Route(redirect_to=f"/r{index + 1}"))
    assert failure_reason(make_fetcher(max_redirects=5), web.url("/r0")) == "too_many_redirects"


def test_forbidden_address_is_refused_directly_and_after_a_redirect(web, small_jpeg):
    with PlantedWeb("127.0.0.2") as internal:
        secret = internal.plant("/secret.jpg", Route(small_jpeg))
        fetcher = make_fetcher()
        assert failure_reason(fetcher, secret) == "forbidden_address"
        bounce = web.plant("/bounce", Route(redirect_to=secret))
        assert failure_reason(fetcher, bounce) == "forbidden_address"
        assert internal.requests == []
        assert web.hits("/bounce") == 1


def test_robots_txt_is_fetched_once_and_disallowed_paths_never_requested(web, small_jpeg):
    web.plant(
        "/robots.txt",
        Route(b"User-agent: openvision\nDisallow: /no-ai/\n", content_type="text/plain"),
    )
    allowed = web.plant("/ok/a.jpg", Route(small_jpeg))
    disallowed = web.plant("/no-ai/a.jpg", Route(small_jpeg))
    fetcher = make_fetcher()
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda url: _outcome(fetcher, url), [allowed, disallowed] * 8))
    assert outcomes == ["ok", "robots_disallowed"] * 8
    assert web.hits("/robots.txt") == 1 and web.hits("/no-ai/a.jpg") == 0


def _outcome(fetcher, url):
    try:
        fetcher.fetch(url)
        return "ok"
    except DownloadFailure as failure:
        return failure.reason


def test_robots_txt_server_error_blocks_the_host_for_now(web, small_jpeg):
    web.plant("/robots.txt", Route(b"down", status=503))
    url = web.plant("/a.jpg", Route(small_jpeg))
    assert failure_reason(make_fetcher(retries=0), url) == "robots_unreachable"
    assert web.hits("/a.jpg") == 0


def test_non_image_is_abandoned_after_its_first_bytes(web):
    url = web.plant(
        "/page.jpg", Route(b"<!DOCTYPE html><html>" + b"x" * 1_000_000, content_type="image/jpeg")
    )
    assert failure_reason(make_fetcher(), url) == "not_an_image"


def test_byte_limit_applies_to_declared_and_streamed_bodies(web, small_jpeg):
    big = small_jpeg + b"\0" * 200_000
    declared = web.plant("/big.jpg", Route(big))
    streamed = web.plant("/big-chunked.jpg", Route(big, chunked=True))
    fetcher = make_fetcher(max_bytes=100_000)
    assert failure_reason(fetcher, declared) == "too_large"
    assert failure_reason(fetcher, streamed) == "too_large"
    assert make_fetcher().fetch(streamed).body == big


def test_body_cut_short_is_truncated(web, small_jpeg):
    url = web.plant("/cut.jpg", Route(small_jpeg, truncate_at=len(small_jpeg) // 2))
    assert failure_reason(make_fetcher(retries=0), url) == "truncated"


def test_per_host_connection_limit_holds_across_threads(web, small_jpeg):
    for index in range(12):
        web.plant(f"/p{index}.jpg", Route(small_jpeg, delay_headers_s=0.15))
    fetcher = make_fetcher(per_host_connections=2)
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda i: fetcher.fetch(web.url(f"/p{i}.jpg")), range(12)))
    assert web.peak_total_concurrency == 2


def test_dns_is_resolved_once_per_host(web, small_jpeg):
    web.plant("/d.jpg", Route(small_jpeg))
    fetcher = make_fetcher()
    for _ in range(5):
        fetcher.fetch(f"http://localhost:{web.port}/d.jpg")
    assert fetcher.dns.lookups == 1


def test_unsupported_scheme_and_bad_url():
    fetcher = make_fetcher()
    assert failure_reason(fetcher, "ftp://127.0.0.1/a.jpg") == "unsupported_scheme"
    assert failure_reason(fetcher, "http://127.0.0.1:99999999/a.jpg") == "bad_url"


@pytest.mark.parametrize("part", ["headers", "body"])
def test_one_deadline_cuts_off_headers_or_a_body_trickled_a_byte_at_a_time(web, small_jpeg, part):
    # Every receive returns within the read timeout, so only the request's deadline can end it.
    url = web.plant(f"/{part}.jpg", Route(small_jpeg, trickle=part, trickle_interval_s=0.05))
    fetcher = make_fetcher(retries=0, timeouts=Timeouts(connect_s=1.0, read_s=1.0, total_s=1.0))
    outcome: list[str] = []
    started = time.monotonic()
    worker = threading.Thread(
        target=lambda: outcome.append(failure_reason(fetcher, url)), daemon=True
    )
    worker.start()
    worker.join(timeout=4.0)
    assert not worker.is_alive(), f"a trickled {part} held the request past its deadline"
    assert outcome == ["timeout"]
    assert time.monotonic() - started < 2.0
