"""Pages -> a Common Crawl snapshot folder: WARC and WAT files plus warc.paths.gz / wat.paths.gz.

Layout (paths in the *.paths.gz lists are relative to the build root, as CC's are to its bucket):
    crawl-data/CC-MAIN-MINI-<seed>/warc.paths.gz, wat.paths.gz
    crawl-data/CC-MAIN-MINI-<seed>/segments/<segment>/warc/<name>.warc.gz
    crawl-data/CC-MAIN-MINI-<seed>/segments/<segment>/wat/<name>.warc.wat.gz

Planted page faults: one response whose HTTP head is garbage ("broken_http_headers"), and one
file whose last gzip member is cut in half ("truncated_record": the page's response is the
partial member; its metadata record is lost).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from tqdm import tqdm

from curation.minicc import wat
from curation.minicc.html import render_page
from curation.minicc.pages import Page
from curation.minicc.warc import (
    CRAWLER_USER_AGENT,
    WarcWriter,
    broken_http_response_head,
    http_request_block,
    http_response_head,
    record_id,
    sha1_digest,
    warc_fields,
)

FILES_PER_SEGMENT = 4
CRAWL_START = datetime(2024, 3, 1, tzinfo=UTC)


def snapshot_name(seed: int) -> str:
    return f"CC-MAIN-MINI-{seed}"


def planned_page_faults(page_count: int, pages_per_file: int) -> dict[int, str]:
    """Which pages carry the planted faults: the 2nd page of the first file, the very last page."""
    if page_count < 3 or pages_per_file < 2:
        return {}
    return {1: "broken_http_headers", page_count - 1: "truncated_record"}


@dataclass
class SnapshotFiles:
    warc_paths: list[str]
    wat_paths: list[str]


def _dates(page: Page) -> tuple[str, str]:
    moment = CRAWL_START + timedelta(seconds=17 * page.index)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ"), format_datetime(moment, usegmt=True)


class _FilePairWriter:
    """Writes one WARC file and its WAT twin."""

    def __init__(
        self, seed: int, warc_rel: str, wat_rel: str, warc_stream: BinaryIO, wat_stream: BinaryIO
    ) -> None:
        self.seed = seed
        self.warc_rel, self.wat_rel = warc_rel, wat_rel
        self.warc_name = warc_rel.rsplit("/", 1)[1]
        self.warc = WarcWriter(warc_stream)
        self.wat = WarcWriter(wat_stream)
        self.truncate_at: int | None = None

    def _wat_record(self, target_uri: str, written, payload, date: str) -> None:
        block = wat.wat_record_block(self.warc_name, written, payload)
        headers = [
            ("WARC-Target-URI", target_uri),
            ("WARC-Refers-To", dict(written.headers)["WARC-Record-ID"]),
            ("Content-Type", "application/json"),
        ]
        self.wat.write(
            "metadata",
            headers,
            block,
            record_id(self.seed, "wat", self.wat_rel, self.wat.position),
            date,
        )

    def write_warcinfo(self, snapshot: str, first_page: Page) -> str:
        date, _ = _dates(first_page)
        fields = warc_fields(
            [
                ("software", "curation.minicc (synthetic mini Common Crawl)"),
                ("format", "WARC File Format 1.0"),
                ("isPartOf", snapshot),
                ("operator", "minicc"),
                ("description", "Deterministic synthetic web on 127.0.0.0/8"),
                ("http-header-user-agent", CRAWLER_USER_AGENT),
            ]
        )
        self.warcinfo_id = record_id(self.seed, "warcinfo", self.warc_rel)
        written = self.warc.write(
            "warcinfo",
            [("WARC-Filename", self.warc_name), ("Content-Type", "application/warc-fields")],
            fields,
            self.warcinfo_id,
            date,
        )
        wat_info = warc_fields([("software", "curation.minicc WAT"), ("isPartOf", snapshot)])
        self.wat.write(
            "warcinfo",
            [
                ("WARC-Filename", self.wat_rel.rsplit("/", 1)[1]),
                ("Content-Type", "application/warc-fields"),
            ],
            wat_info,
            record_id(self.seed, "watinfo", self.wat_rel),
            date,
        )
        self._wat_record(
            self.warc_name, written, wat.fields_metadata(written, "WARC-Info-Metadata"), date
        )
        return self.warcinfo_id

    def write_page(self, page: Page) -> None:
        date, date_http = _dates(page)
        parts = urlsplit(page.url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        ip = parts.hostname or ""
        request_id = record_id(self.seed, "request", page.url)
        response_id = record_id(self.seed, "response", page.url)
        request = self.warc.write(
            "request",
            [
                ("Content-Type", "application/http; msgtype=request"),
                ("WARC-Warcinfo-ID", self.warcinfo_id),
                ("WARC-IP-Address", ip),
                ("WARC-Target-URI", page.url),
                ("WARC-Block-Digest", sha1_digest(http_request_block(path, parts.netloc))),
            ],
            http_request_block(path, parts.netloc),
            request_id,
            date,
        )
        self._wat_record(page.url, request, wat.request_metadata(request), date)

        content_type, body = render_page(page)
        broken = page.page_fault == "broken_http_headers"
        head = (broken_http_response_head if broken else http_response_head)(
            content_type, len(body), date_http
        )
        block = head + body
        response = self.warc.write(
            "response",
            [
                ("Content-Type", "application/http; msgtype=response"),
                ("WARC-Warcinfo-ID", self.warcinfo_id),
                ("WARC-Concurrent-To", request_id),
                ("WARC-IP-Address", ip),
                ("WARC-Target-URI", page.url),
                ("WARC-Payload-Digest", sha1_digest(body)),
                ("WARC-Block-Digest", sha1_digest(block)),
                ("WARC-Identified-Payload-Type", "text/html"),
            ],
            block,
            response_id,
            date,
        )
        if page.page_fault == "truncated_record":
            # The crawl was cut off inside this response; nothing after it survives.
            self.truncate_at = response.offset + response.length // 2
            return
        self._wat_record(
            page.url, response, wat.response_metadata(response, page, not broken), date
        )
        metadata = warc_fields(
            [
                ("fetchTimeMs", str(40 + page.index % 300)),
                ("charset-detected", page.charset.upper()),
                ("languages-cld2", f'{{"reliable":true,"languages":[{{"code":"{page.lang}"}}]}}'),
            ]
        )
        written = self.warc.write(
            "metadata",
            [
                ("Content-Type", "application/warc-fields"),
                ("WARC-Warcinfo-ID", self.warcinfo_id),
                ("WARC-Concurrent-To", response_id),
                ("WARC-Target-URI", page.url),
                ("WARC-Block-Digest", sha1_digest(metadata)),
            ],
            metadata,
            record_id(self.seed, "metadata", page.url),
            date,
        )
        self._wat_record(
            page.url, written, wat.fields_metadata(written, "WARC-Metadata-Metadata"), date
        )


def write_snapshot(root: Path, seed: int, pages: list[Page], pages_per_file: int) -> SnapshotFiles:
    """Write every page into WARC/WAT files under `root`; sets each page's `warc_path`."""
    snapshot = snapshot_name(seed)
    base = f"crawl-data/{snapshot}"
    files = SnapshotFiles(warc_paths=[], wat_paths=[])
    starts = range(0, len(pages), pages_per_file)
    for file_number, start in enumerate(
        tqdm(starts, desc="write WARC/WAT", unit="file", leave=False)
    ):
        segment_number = file_number // FILES_PER_SEGMENT
        segment = f"{1709251200000 + seed * 1000 + segment_number}.{segment_number}"
        name = f"CC-MAIN-20240301000000-20240301120000-{file_number:05d}"
        warc_rel = f"{base}/segments/{segment}/warc/{name}.warc.gz"
        wat_rel = f"{base}/segments/{segment}/wat/{name}.warc.wat.gz"
        chunk = pages[start : start + pages_per_file]
        (root / warc_rel).parent.mkdir(parents=True, exist_ok=True)
        (root / wat_rel).parent.mkdir(parents=True, exist_ok=True)
        with open(root / warc_rel, "wb") as warc_stream, open(root / wat_rel, "wb") as wat_stream:
            writer = _FilePairWriter(seed, warc_rel, wat_rel, warc_stream, wat_stream)
            writer.write_warcinfo(snapshot, chunk[0])
            for page in chunk:
                page.warc_path = warc_rel
                writer.write_page(page)
            if writer.truncate_at is not None:
                warc_stream.truncate(writer.truncate_at)
        files.warc_paths.append(warc_rel)
        files.wat_paths.append(wat_rel)
    for list_name, paths in (
        ("warc.paths.gz", files.warc_paths),
        ("wat.paths.gz", files.wat_paths),
    ):
        (root / base / list_name).write_bytes(
            gzip.compress(("\n".join(paths) + "\n").encode(), mtime=0)
        )
    return files
