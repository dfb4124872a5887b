"""Read WARC/WAT files with FastWARC, surviving the damage real archives have.

A Common Crawl file is a sequence of independent gzip members, one record each. FastWARC stops at
the first member it cannot decompress or parse; we then look for the next member header after the
damage and carry on from there, so one bad record costs only itself. A record whose body ends early
(a truncated final member) or whose HTTP header is broken is counted and skipped. Each problem is
recorded in the shard stats as an error naming the file, the byte offset and the cause.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import fsspec
from fastwarc.warc import ArchiveIterator, WarcRecordType
from fsspec.implementations.local import LocalFileSystem

from curation.stats import ShardStats

GZIP_MEMBER_MAGIC = b"\x1f\x8b\x08"
WARC_RECORD_MAGIC = b"WARC/"  # 1.0, 1.1, and the 0.18 of ClueWeb09/12
RESYNC_CHUNK_BYTES = 1 << 20
HTML_CONTENT_TYPES = frozenset({"text/html", "application/xhtml+xml"})
PUBLIC_CC_BUCKET = "s3://commoncrawl/"
# A Content-Type line anywhere in the raw HTTP header, also after a bare-LF line break.
_CONTENT_TYPE_LINE = re.compile(
    r"^content-type[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE
)


class UnreadableArchiveError(ValueError):
    """A file in which not one record could be read: not a WARC/WAT file, or damaged throughout."""


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
    records whose HTTP header does not parse are skipped ("bad_http_header"). A file that yields
    no record of these types at all (empty, random bytes, a gzip of something else, or damaged
    throughout) raises `UnreadableArchiveError`, so its shard fails and a re-run retries it.
    """
    magic = GZIP_MEMBER_MAGIC if url.endswith(".gz") else WARC_RECORD_MAGIC
    records_seen = 0
    with open_archive(url) as handle:
        start: int | None = 0
        in_damage = False  # one damaged stretch can take several resync attempts: count it once
        while start is not None:
            handle.seek(start)
            last_offset = None
            try:
                for record in ArchiveIterator(handle, record_types=record_types, parse_http=False):
                    last_offset, in_damage = record.stream_pos, False
                    records_seen += 1
                    parsed = _read_record(url, record, stats, parse_http)
                    if parsed is not None:
                        yield parsed
                break
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
    if records_seen == 0:
        damage = (
            f"; {stats.error_examples[-1]['message']}" if stats.errors.get("corrupt_member") else ""
        )
        raise UnreadableArchiveError(f"{url}: no readable WARC record in the file{damage}")


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
        content_type, charset = http_content_type(record)
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


def http_content_type(record) -> tuple[str | None, str | None]:
    """The HTTP media type and charset of a parsed record.

    FastWARC's shortcut is None for some older archives (ClueWeb09/12's WARC/0.18 records, and
    headers with bare-LF line breaks, whose later lines FastWARC folds into the line before):
    then the Content-Type line is read from the raw header itself."""
    if record.http_content_type:
        return record.http_content_type, record.http_charset
    headers = record.http_headers
    value = headers.get("Content-Type")
    if value is None:
        found = _CONTENT_TYPE_LINE.search(str(headers))
        value = found.group(1) if found else None
    if not value:
        return None, None
    media_type, *parameters = value.split(";")
    charset = None
    for parameter in parameters:
        name, _, argument = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = argument.strip().strip("\"'").lower() or None
            break
    return media_type.strip().lower() or None, charset


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
