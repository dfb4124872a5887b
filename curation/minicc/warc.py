"""A small WARC/1.0 writer: one gzip member per record, Common Crawl's record set and headers.

Written by hand (not with warcio) so that every byte is under our control: record ids and dates
derive from the seed, gzip members carry mtime 0, and faults can be planted in exact places.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import uuid
from dataclasses import dataclass
from typing import BinaryIO

CRLF = b"\r\n"
CRAWLER_USER_AGENT = "minicc-crawler/1.0"


def sha1_digest(data: bytes) -> str:
    """Common Crawl's digest form: "sha1:" + base32 of the SHA-1."""
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode("ascii")


def record_id(*parts: object) -> str:
    """A deterministic urn:uuid record id from the given parts."""
    digest = hashlib.sha1(":".join(map(str, parts)).encode()).digest()[:16]
    return f"<urn:uuid:{uuid.UUID(bytes=digest, version=4)}>"


@dataclass(frozen=True)
class WrittenRecord:
    offset: int  # of the gzip member in the file
    length: int  # compressed length of the member
    header_length: int  # uncompressed WARC header length (incl. the blank line)
    block: bytes
    headers: tuple[tuple[str, str], ...]


def encode_record(headers: list[tuple[str, str]], block: bytes) -> tuple[bytes, int]:
    """Uncompressed record bytes and the length of its header section."""
    head = (
        b"WARC/1.0"
        + CRLF
        + b"".join(f"{name}: {value}".encode() + CRLF for name, value in headers)
        + CRLF
    )
    return head + block + CRLF + CRLF, len(head)


class WarcWriter:
    """Appends gzip-member records to a binary file object and remembers where each went."""

    def __init__(self, stream: BinaryIO, compresslevel: int = 6) -> None:
        self.stream = stream
        self.compresslevel = compresslevel
        self.position = 0

    def write(
        self,
        warc_type: str,
        headers: list[tuple[str, str]],
        block: bytes,
        record_id_value: str,
        date: str,
    ) -> WrittenRecord:
        """Write one record; WARC-Type, -Date, -Record-ID and Content-Length are filled in."""
        full_headers = [
            ("WARC-Type", warc_type),
            ("WARC-Date", date),
            ("WARC-Record-ID", record_id_value),
            ("Content-Length", str(len(block))),
            *headers,
        ]
        raw, header_length = encode_record(full_headers, block)
        member = gzip.compress(raw, compresslevel=self.compresslevel, mtime=0)
        offset = self.position
        self.stream.write(member)
        self.position += len(member)
        return WrittenRecord(
            offset=offset,
            length=len(member),
            header_length=header_length,
            block=block,
            headers=tuple(full_headers),
        )


def http_request_block(url_path: str, host: str) -> bytes:
    lines = [
        f"GET {url_path} HTTP/1.1",
        f"Host: {host}",
        f"User-Agent: {CRAWLER_USER_AGENT}",
        "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "Accept-Language: en-US,en;q=0.5",
        "Accept-Encoding: br,gzip",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def http_response_head(content_type: str, body_length: int, date_http: str) -> bytes:
    lines = [
        "HTTP/1.1 200 OK",
        f"Date: {date_http}",
        "Server: nginx/1.18.0",
        f"Content-Type: {content_type}",
        f"Content-Length: {body_length}",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def broken_http_response_head(content_type: str, body_length: int, date_http: str) -> bytes:
    """A response head no HTTP parser can make sense of: garbled status line, colon-less fields."""
    lines = [
        "HTTP/1.1 2OO Okay?!",
        f"Date {date_http}",
        "Server:: nginx/1.18.0",
        f"Content-Type {content_type}",
        f"Content-Length: {body_length}x",
        "\x00\x01garbage",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def warc_fields(fields: list[tuple[str, str]]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in fields).encode("utf-8")
