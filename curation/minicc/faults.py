"""The faults planted on image URLs, and the served behaviour (a route) that realises each one.

A route is a plain JSON-able dict the server interprets; the builder writes them all into
`www/routes.json`. Keys (all optional): `file` (served body, relative to www/), `content_type`,
`status`, `headers`, `delay_s`, `truncate_at` (bytes actually sent while Content-Length promises
the whole file), `fail_first` ({"count", "status", "retry_after"}: fail the first N requests), and
`redirect` ({"status", "location"}), and `fault` (the planted fault kind, echoed in the request log).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

Route = dict[str, Any]

# fault kind -> what a well-behaved downloader should conclude.
FAULT_KINDS: dict[str, str] = {
    "not_found": "404, permanent",
    "retry_503": "503 with Retry-After for the first requests, then the image (retryable)",
    "retry_429": "429 with Retry-After for the first request, then the image (retryable)",
    "server_error": "500 on every request (permanent)",
    "slow": "headers only after a delay longer than a reasonable read timeout (bounded)",
    "truncated": "Content-Length promises more bytes than are sent before the connection closes",
    "not_image": "an HTML page served at an image URL",
    "corrupt_image": "garbage bytes served as image/jpeg",
    "decompression_bomb": "a small PNG whose header declares more than 100 Mpx",
    "redirect_chain": "2-3 redirects (some across hosts) ending at a real image",
    "redirect_loop": "redirects that come back to where they started",
    "redirect_to_forbidden": "a redirect from an allowed host to the forbidden address",
    "forbidden_address": "a URL on a loopback address outside the allowed CIDR",
    "x_robots_noai": "the image, with X-Robots-Tag: noai",
    "x_robots_noimageai": "the image, with X-Robots-Tag: noimageai",
    "robots_disallowed": "the image, on a path robots.txt disallows for every agent",
    "robots_disallowed_agent": "the image, on a path robots.txt disallows for ROBOTS_AGENT_TOKEN",
}

# Faults whose URL still yields the scene's picture when fetched (or retried, or followed).
PICTURE_BEARING_FAULTS = frozenset(
    {
        "retry_503",
        "retry_429",
        "slow",
        "redirect_chain",
        "x_robots_noai",
        "x_robots_noimageai",
        "robots_disallowed",
        "robots_disallowed_agent",
    }
)

SLOW_DELAY_S = 8.0  # past common 5 s read timeouts, under the server's 10 s bound
RETRY_AFTER_S = 1
ROBOTS_AGENT_TOKEN = "img2dataset"
DISALLOWED_FOR_ALL = "/private/"
DISALLOWED_FOR_AGENT = "/no-ai/"
BOMB_SIDE = 10_240  # 10240**2 ≈ 105 Mpx, above Pillow's 89 Mpx warning threshold

NOT_IMAGE_BODY = (
    b"<!DOCTYPE html><html><head><title>Login required</title></head>"
    b"<body><p>Please sign in to view this image.</p></body></html>"
)


def robots_txt(host_index: int) -> str | None:
    """robots.txt for the host at `host_index`; the first host has none (its fetch is a 404).

    The agent group repeats the general rule because a crawler obeys only the most specific group.
    """
    if host_index == 0:
        return None
    lines = [
        f"User-agent: {ROBOTS_AGENT_TOKEN}",
        f"Disallow: {DISALLOWED_FOR_ALL}",
        f"Disallow: {DISALLOWED_FOR_AGENT}",
        "",
        "User-agent: *",
        f"Disallow: {DISALLOWED_FOR_ALL}",
    ]
    if host_index % 2 == 0:
        lines.append("Disallow: /cgi-bin/")
    return "\n".join(lines) + "\n"


def decompression_bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A valid 1-bit greyscale PNG of side x side black pixels: tens of KB on disk."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    row = b"\x00" + b"\x00" * ((side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def corrupt_jpeg_bytes(seed_bytes: bytes) -> bytes:
    """Starts like a JPEG (SOI + APP0 marker) so sniffing passes, then garbage."""
    filler = (seed_bytes * (2048 // max(1, len(seed_bytes)) + 1))[:2048]
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(b ^ 0x5A for b in filler)
