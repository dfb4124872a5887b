"""The fault server over real HTTP on loopback: every fault kind answers as designed.

Requests use http.client with short timeouts and follow redirects by hand, only inside the
world's allowed CIDR; nothing here contacts an address outside 127.0.0.0/8.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import json
import socket
import urllib.robotparser
import warnings
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urljoin, urlsplit

import pyarrow.parquet as pq
import pytest
from PIL import Image
from private_world import build_private_world

from curation.minicc.faults import FAULT_KINDS, ROBOTS_AGENT_TOKEN
from curation.minicc.server import serve_world

TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def served_world(tmp_path_factory):
    return build_private_world(tmp_path_factory, "minicc-served")


@pytest.fixture(scope="module")
def web(served_world):
    root, world = served_world
    log = root.parent / "server-test-requests.jsonl"
    with serve_world(root, log_path=log) as server:
        yield server, world, root


@pytest.fixture(scope="module")
def fault_urls(served_world):
    root, _ = served_world
    truth = pq.read_table(root / "truth.parquet").to_pylist()
    referenced = {r["image_url"] for r in truth if r["page_fault"] is None}
    urls: dict[str, list[dict]] = {}
    for row in pq.read_table(root / "truth_images.parquet").to_pylist():
        if row["fault"]:
            assert row["url"] in referenced, f"{row['fault']} URL {row['url']} is on no page"
            urls.setdefault(row["fault"], []).append(row)
    return urls


def fetch(url: str, timeout: float = TIMEOUT_S, user_agent: str = "minicc-test"):
    """(status, headers, body) of one GET, without following redirects."""
    parts = urlsplit(url)
    assert ipaddress.ip_address(parts.hostname) in ipaddress.ip_network("127.0.0.0/8")
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("GET", parts.path or "/", headers={"User-Agent": user_agent})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def follow(url: str, allowed: str, max_hops: int = 6) -> tuple[list[str], int, bytes]:
    """Follow redirects by hand while they stay inside `allowed`; returns (visited, status, body)."""
    visited = [url]
    for _ in range(max_hops):
        status, headers, body = fetch(url)
        if status not in (301, 302, 303, 307, 308):
            return visited, status, body
        url = urljoin(url, headers["Location"])
        if ipaddress.ip_address(urlsplit(url).hostname) not in ipaddress.ip_network(allowed):
            return visited + [url], status, b""  # refused: outside the allow-list
        if url in visited:
            return visited + [url], status, b""
        visited.append(url)
    return visited, status, b""


def decode_size(body: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(body)) as image:
        image.load()
        return image.size


def test_every_fault_kind_is_planted_and_referenced_from_a_page(fault_urls):
    assert set(fault_urls) == set(FAULT_KINDS)


def test_a_healthy_image_is_served_with_its_recorded_size(web, served_world):
    root, _ = served_world
    rows = [
        r
        for r in pq.read_table(root / "truth_images.parquet").to_pylist()
        if r["variant"] == "original"
    ]
    for row in rows[:5]:
        status, headers, body = fetch(row["url"])
        assert status == 200 and headers["Content-Type"].startswith("image/")
        assert decode_size(body) == (row["width"], row["height"])


def test_robots_txt_per_host(web):
    server, _world, _ = web
    first, *others = server.base_urls
    assert fetch(first + "/robots.txt")[0] == 404  # a host without robots.txt
    for base in others:
        status, _, body = fetch(base + "/robots.txt")
        assert status == 200
        parser = urllib.robotparser.RobotFileParser()
        parser.parse(body.decode().splitlines())
        assert not parser.can_fetch("*", base + "/private/x.jpg")
        assert parser.can_fetch("*", base + "/no-ai/x.jpg")
        assert not parser.can_fetch(ROBOTS_AGENT_TOKEN, base + "/no-ai/x.jpg")
        assert parser.can_fetch(ROBOTS_AGENT_TOKEN, base + "/img/x.jpg")


def test_permanent_errors(web, fault_urls):
    for kind, expected in (("not_found", 404), ("server_error", 500)):
        for row in fault_urls[kind]:
            assert fetch(row["url"])[0] == expected
            assert fetch(row["url"])[0] == expected  # still failing: permanent
            logged = json.loads(web[0].log_path.read_text().splitlines()[-1])
            assert (logged["fault"], logged["status"]) == (kind, expected)


@pytest.mark.parametrize("kind,status,failures", [("retry_503", 503, 2), ("retry_429", 429, 1)])
def test_retryable_errors_then_the_image(web, fault_urls, kind, status, failures):
    row = fault_urls[kind][0]
    for _ in range(failures):
        got, headers, _ = fetch(row["url"])
        assert got == status and int(headers["Retry-After"]) >= 1
    got, _, body = fetch(row["url"])
    assert got == 200 and decode_size(body) == (row["width"], row["height"])


def test_slow_image_exceeds_a_short_read_timeout(web, fault_urls):
    with pytest.raises((socket.timeout, TimeoutError)):
        fetch(fault_urls["slow"][0]["url"], timeout=0.5)


def test_truncated_body_is_shorter_than_its_content_length(web, fault_urls):
    with pytest.raises(http.client.IncompleteRead):
        fetch(fault_urls["truncated"][0]["url"])


def test_non_image_and_corrupt_image_payloads(web, fault_urls):
    status, headers, body = fetch(fault_urls["not_image"][0]["url"])
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    status, headers, body = fetch(fault_urls["corrupt_image"][0]["url"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    with pytest.raises(OSError):
        decode_size(body)


def test_decompression_bomb_declares_over_100_megapixels(web, fault_urls):
    status, _, body = fetch(fault_urls["decompression_bomb"][0]["url"])
    assert status == 200 and len(body) < 100_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(body)) as image:  # header only: never decode it
            assert image.width * image.height > 100_000_000


def test_redirect_chain_ends_at_the_final_image(web, fault_urls):
    _server, world, _ = web
    for row in fault_urls["redirect_chain"]:
        visited, status, body = follow(row["url"], world["allowed_cidr"])
        assert 3 <= len(visited) <= 4  # 2-3 hops
        assert visited[-1] == row["final_url"] and status == 200
        assert decode_size(body) == (row["width"], row["height"])


def test_redirect_loop_comes_back(web, fault_urls):
    _server, world, _ = web
    visited, status, _ = follow(fault_urls["redirect_loop"][0]["url"], world["allowed_cidr"])
    assert status in (301, 302) and visited[-1] in visited[:-1]


def test_forbidden_targets_are_outside_the_allow_list(web, fault_urls):
    _server, world, _ = web
    allowed = ipaddress.ip_network(world["allowed_cidr"])
    for host in world["hosts"]:
        assert ipaddress.ip_address(host) in allowed
    for row in fault_urls["forbidden_address"]:
        assert ipaddress.ip_address(urlsplit(row["url"]).hostname) not in allowed
    row = fault_urls["redirect_to_forbidden"][0]
    visited, status, _ = follow(row["url"], world["allowed_cidr"])
    assert status == 302 and urlsplit(visited[-1]).hostname in world["forbidden_addresses"]


def test_forbidden_listener_records_what_reaches_it(web, fault_urls):
    server, _, _ = web
    url = fault_urls["forbidden_address"][0]["url"]
    assert fetch(url, user_agent="leaky-downloader")[0] == 200
    entries = [json.loads(line) for line in server.log_path.read_text().splitlines()]
    hits = [e for e in entries if e["host"] in server.forbidden_addresses]
    assert hits and hits[-1]["user_agent"] == "leaky-downloader"
    assert hits[-1]["path"] == urlsplit(url).path
    assert hits[-1]["fault"] == "forbidden_address"


def test_opt_out_headers_and_robots_disallowed_paths(web, fault_urls):
    for kind, value in (("x_robots_noai", "noai"), ("x_robots_noimageai", "noimageai")):
        status, headers, _ = fetch(fault_urls[kind][0]["url"])
        assert status == 200 and headers["X-Robots-Tag"] == value
    for kind, agent_only in (("robots_disallowed", False), ("robots_disallowed_agent", True)):
        url = fault_urls[kind][0]["url"]
        parts = urlsplit(url)
        parser = urllib.robotparser.RobotFileParser()
        parser.parse(fetch(f"http://{parts.netloc}/robots.txt")[2].decode().splitlines())
        assert not parser.can_fetch(ROBOTS_AGENT_TOKEN, url)
        assert parser.can_fetch("*", url) == agent_only
        assert fetch(url)[0] == 200  # robots.txt is advice: the server still answers


def test_request_log_records_every_request(web):
    server, _, _ = web
    fetch(server.base_urls[1] + "/robots.txt", user_agent="log-check/1.0")
    entry = json.loads(server.log_path.read_text().splitlines()[-1])
    assert entry["user_agent"] == "log-check/1.0" and entry["status"] == 200
    assert entry["host"] == urlsplit(server.base_urls[1]).hostname
    assert entry["path"] == "/robots.txt" and entry["time"]


def test_parallel_requests_are_all_answered_and_logged(web, served_world):
    server, _, root = web
    urls = [
        r["url"]
        for r in pq.read_table(root / "truth_images.parquet").to_pylist()
        if r["variant"] == "original"
    ][:40]
    before = len(server.log_path.read_text().splitlines())
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(lambda url: fetch(url)[0], urls))
    assert statuses == [200] * len(urls)
    assert len(server.log_path.read_text().splitlines()) == before + len(urls)


def test_the_server_records_each_hosts_concurrency_and_request_rate(web):
    server, _, _ = web
    host = urlsplit(server.base_urls[2]).hostname
    other = urlsplit(server.base_urls[3]).hostname
    before = server.host_load()
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda _: fetch(server.base_urls[2] + "/robots.txt"), range(6)))
    after = server.host_load()
    assert after[host]["requests"] == before[host]["requests"] + 6
    assert after[other] == before[other]
    assert 6 <= after[host]["peak_requests_per_s"] <= after[host]["requests"]
    assert 1 <= after[host]["peak_concurrency"] <= after[host]["requests"]
    entries = [json.loads(line) for line in server.log_path.read_text().splitlines()[-6:]]
    assert all(1 <= entry["in_flight"] <= 6 for entry in entries)


def test_serving_on_another_port_than_the_build_is_refused(served_world):
    root, world = served_world
    with pytest.raises(ValueError, match="built for port"):
        serve_world(root, port=world["port"] + 1)


def test_a_client_that_hangs_up_is_not_reported_as_a_server_error(capsys):
    from http.server import BaseHTTPRequestHandler

    from curation.minicc.server import _LoopbackHTTPServer

    server = _LoopbackHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    try:
        for error in (BrokenPipeError(32, "Broken pipe"), ConnectionResetError(104, "reset")):
            try:
                raise error
            except OSError:
                server.handle_error(None, ("127.0.0.1", 1))
        assert capsys.readouterr().err == ""
        try:
            raise ValueError("a real bug in a handler")
        except ValueError:
            server.handle_error(None, ("127.0.0.1", 1))
        assert "ValueError: a real bug in a handler" in capsys.readouterr().err
    finally:
        server.server_close()
