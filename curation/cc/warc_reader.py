"""Read WARC/WAT files with FastWARC, surviving the damage real archives have.

A Common Crawl file is a sequence of independent gzip members, one record each. FastWARC stops at
the first member it cannot decompress or parse; we then look for the next member header after the
damage and carry on from there, so one bad record costs only itself. A record whose body ends early
(a truncated final member) or whose HTTP header is broken is counted and skipped. Each problem is
recorded in the shard stats as an error naming the file, the byte offset and the cause.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import fsspec
from fastwarc.warc import ArchiveIterator, WarcRecordType
from fsspec.implementations.local import LocalFileSystem

from curation.stats import ShardStats

GZIP_MEMBER_MAGIC = b"\x1f\x8b\x08"
WARC_RECORD_MAGIC = b"WARC/1."
RESYNC_CHUNK_BYTES = 1 << 20
HTML_CONTENT_TYPES = frozenset({"text/html", "application/xhtml+xml"})
PUBLIC_CC_BUCKET = "s3://commoncrawl/"


@dataclass(slots=True)
class RawRecord:
    offset: int  # byte offset of the record (its gzip member) in the file
    target_uri: str
    body: bytes  # the HTTP payload for HTTP records, else the whole record block
    http_status: int | None
    http_content_type: str | None
    http_charset: str | None
    identified_type: str | None = None  # Common Crawl's sniffed MIME type of the payload


def archive_filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """fsspec's filesystem for `url`; the public Common Crawl bucket needs no AWS account."""
    options = {"anon": True} if url.startswith(PUBLIC_CC_BUCKET) else {}
    return fsspec.core.url_to_fs(url, **options)


@contextlib.contextmanager
def open_archive(url: str) -> Iterator[BinaryIO]:
    """Open a WARC/WAT file by fsspec URL; the public Common Crawl bucket is read anonymously."""
    fs, path = archive_filesystem(url)
    # Python's own buffered file is cheaper per read() than fsspec's local wrapper.
    opener = open(path, "rb") if isinstance(fs, LocalFileSystem) else fs.open(path, "rb")  # noqa: SIM115
    with opener as handle:
        yield handle


def find_next_member(handle: BinaryIO, start: int, magic: bytes) -> int | None:
    """The offset of the first `magic` at or after `start`, or None if the file has none."""
    handle.seek(start)
    position, tail = start, b""
    while True:
        chunk = handle.read(RESYNC_CHUNK_BYTES)
        if not chunk:
            return None
        window = tail + chunk
        found = window.find(magic)
        if found >= 0:
            return position - len(tail) + found
        tail = window[-(len(magic) - 1) :]
        position += len(chunk)


def iter_records(
    url: str, record_types: int, stats: ShardStats, *, parse_http: bool
) -> Iterator[RawRecord]:
    """Every readable record of `url` of the given types, in file order.

    Damaged members are skipped (counted as errors "corrupt_member"); records whose body is
    shorter than their declared length are skipped ("truncated_record"); with `parse_http`,
    records whose HTTP header does not parse are skipped ("bad_http_header").
    """
    magic = GZIP_MEMBER_MAGIC if url.endswith(".gz") else WARC_RECORD_MAGIC
    with open_archive(url) as handle:
        start: int | None = 0
        in_damage = False  # one damaged stretch can take several resync attempts: count it once
        while start is not None:
            handle.seek(start)
            last_offset = None
            try:
                for record in ArchiveIterator(handle, record_types=record_types, parse_http=False):
                    last_offset, in_damage = record.stream_pos, False
                    parsed = _read_record(url, record, stats, parse_http)
                    if parsed is not None:
                        yield parsed
                return
            except OSError as exc:  # FastWARC: undecompressable member or unparseable header
                resumed_at = last_offset if last_offset is not None else start
                if not in_damage:
                    stats.error(
                        "corrupt_member",
                        f"{url}@{resumed_at}",
                        f"damaged data after this offset: {type(exc).__name__}: {exc}",
                    )
                in_damage = True
                # Resume at the next member header after the last good record (or after where we
                # last resumed, if not one record came out since), so every attempt moves forward.
                start = find_next_member(handle, resumed_at + 1, magic)


def _read_record(url: str, record, stats: ShardStats, parse_http: bool) -> RawRecord | None:
    offset = record.stream_pos
    where = f"{url}@{offset}"
    target_uri = record.headers.get("WARC-Target-URI")
    if not target_uri:
        stats.error("bad_warc_header", where, "record has no WARC-Target-URI")
        record.reader.consume()
        return None
    status = content_type = charset = None
    if parse_http:
        record.parse_http()
        headers = record.http_headers
        status = headers.status_code if headers is not None else None
        if status is None:
            stats.error(
                "bad_http_header", where, f"unparseable HTTP status line for {target_uri[:200]}"
            )
            record.reader.consume()
            return None
        content_type, charset = record.http_content_type, record.http_charset
    expected = record.content_length
    body = record.reader.read()
    if len(body) < expected:
        stats.error(
            "truncated_record",
            where,
            f"body ends after {len(body)} of {expected} bytes ({target_uri[:200]})",
        )
        return None
    return RawRecord(
        offset,
        target_uri,
        body,
        status,
        content_type,
        charset,
        record.headers.get("WARC-Identified-Payload-Type"),
    )


def is_html(record: RawRecord) -> bool:
    """Served as HTML, or (servers often send no or a wrong type) sniffed as HTML by the crawler."""
    served = (record.http_content_type or "").lower()
    if served in HTML_CONTENT_TYPES:
        return True
    sniffed = (record.identified_type or "").split(";")[0].strip().lower()
    return sniffed in HTML_CONTENT_TYPES and served in (
        "",
        "text/plain",
        "application/octet-stream",
    )


RESPONSE_RECORDS = WarcRecordType.response
METADATA_RECORDS = WarcRecordType.metadata


def archive_size(url: str) -> int:
    """The file's size in bytes (for throughput numbers)."""
    fs, path = archive_filesystem(url)
    return int(fs.size(path))
