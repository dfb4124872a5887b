"""Write WARC and WAT records the way Common Crawl stores them: one gzip member per record.

Used to build test archives (including deliberately damaged ones) and benchmark inputs; the
readers in this package never depend on it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence

WARC_DATE = "2024-02-20T12:00:00Z"


def _record_id(*parts: str) -> str:
    digest = hashlib.blake2b("\x00".join(parts).encode(), digest_size=16).digest()
    return f"<urn:uuid:{uuid.UUID(bytes=digest)}>"


def warc_record(warc_type: str, target_uri: str, block: bytes, content_type: str) -> bytes:
    """One uncompressed WARC/1.0 record (header, block, the two trailing CRLFs)."""
    header = (
        "WARC/1.0\r\n"
        f"WARC-Type: {warc_type}\r\n"
        f"WARC-Date: {WARC_DATE}\r\n"
        f"WARC-Record-ID: {_record_id(warc_type, target_uri)}\r\n"
        f"WARC-Target-URI: {target_uri}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(block)}\r\n\r\n"
    ).encode()
    return header + block + b"\r\n\r\n"


def http_response_block(
    body: bytes,
    content_type: str = "text/html",
    charset: str | None = "utf-8",
    status: str = "200 OK",
    raw_header: bytes | None = None,
) -> bytes:
    """An HTTP response as a WARC response record stores it (`raw_header` replaces the header)."""
    if raw_header is None:
        value = content_type + (f"; charset={charset}" if charset else "")
        raw_header = (
            f"HTTP/1.1 {status}\r\nContent-Type: {value}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode("ascii")
    return raw_header + body


def response_member(page_url: str, body: bytes, **http: object) -> bytes:
    """A gzip member holding one WARC response record for `page_url` (see http_response_block)."""
    block = http_response_block(body, **http)  # type: ignore[arg-type]
    return gzip.compress(
        warc_record("response", page_url, block, "application/http; msgtype=response"), mtime=0
    )


def wat_member(
    page_url: str,
    image_links: Sequence[dict[str, str]],
    base: str | None = None,
    warc_type: str = "response",
) -> bytes:
    """A gzip member holding one WAT metadata record describing an HTML page's image links."""
    head: dict[str, object] = {"Title": "page"}
    if base is not None:
        head["Base"] = base
    links = [{"path": "IMG@/src", **link} for link in image_links]
    envelope = {
        "Format": "WARC",
        "WARC-Header-Metadata": {"WARC-Type": warc_type, "WARC-Target-URI": page_url},
        "Payload-Metadata": {
            "HTTP-Response-Metadata": {
                "Response-Message": {"Status": "200"},
                "HTML-Metadata": {"Head": head, "Links": links},
            }
        },
    }
    block = json.dumps({"Envelope": envelope}, ensure_ascii=False).encode("utf-8")
    return gzip.compress(warc_record("metadata", page_url, block, "application/json"), mtime=0)


def write_archive(path: str, members: Iterable[bytes]) -> None:
    with open(path, "wb") as handle:
        handle.writelines(members)
