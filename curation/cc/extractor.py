"""One WARC or WAT file → its candidate pairs, with the per-file statistics.

Counting convention (so the dashboard's funnel adds up): `rows_in` is every <img> seen, `rows_out`
the pairs kept, and the drops are per image (no usable URL, no text, a text filter). Record-level
numbers (records read, HTML pages, pages skipped for their status or type, pages cut before
parsing by `html_limits`) go to `extra`, with the throughput in MB/s of the compressed file.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pyarrow as pa

from curation.cc.candidates import CandidateTable, PageImages
from curation.cc.charset import markup_for_parser, sniff_encoding
from curation.cc.html_images import DEFAULT_HTML_PARSER, extract_page_images
from curation.cc.html_limits import bounded_page
from curation.cc.snapshot import FORMATS
from curation.cc.text_filters import TextFilters
from curation.cc.warc_reader import (
    METADATA_RECORDS,
    RESPONSE_RECORDS,
    archive_size,
    is_html,
    iter_records,
)
from curation.cc.wat import WatRecordError, page_images_from_wat
from curation.stats import ShardStats

# Drop reasons of images that never got a URL (the rest are text drops of images that did).
URL_DROP_PREFIXES = ("url_", "img_")


def infer_format(url: str) -> str:
    """ "wat" for Common Crawl WAT files (…/wat/….warc.wat.gz), else "warc"."""
    return "wat" if ".wat." in url.rsplit("/", 1)[-1] or "/wat/" in url else "warc"


def extract_file(
    url: str,
    file_format: str,
    filters: TextFilters,
    stats: ShardStats,
    html_parser: str = DEFAULT_HTML_PARSER,
) -> pa.Table:
    """The candidates table of one file; everything it skipped is counted in `stats`.

    `html_parser`: how WARC pages are read, "scan" or "lexbor" (see html_images.HTML_PARSERS)."""
    if file_format not in FORMATS:
        raise ValueError(f"unknown format {file_format!r}; expected one of {FORMATS}")
    table = CandidateTable(filters, warc_path=url)
    counts: Counter = Counter()
    drops: Counter = (
        Counter()
    )  # per image, by reason: the URL ones while parsing, then the text ones
    started = time.perf_counter()
    with stats.timer("extract"):
        if file_format == "warc":
            pages = _warc_pages(url, stats, counts, drops, html_parser)
        else:
            pages = _wat_pages(url, stats, counts, drops)
        for offset, page in pages:
            counts["html_pages"] += 1
            counts["images_with_url"] += len(page.refs)
            counts["pairs"] += table.add_page(page, offset, drops)
    seconds = time.perf_counter() - started
    size = archive_size(url)
    images = counts["images_with_url"] + sum(
        n for reason, n in drops.items() if reason.startswith(URL_DROP_PREFIXES)
    )
    stats.rows_in += images
    stats.rows_out += counts["pairs"]
    stats.bytes_in += size
    for reason, n in sorted(drops.items()):
        stats.drop(reason, n)
    stats.extra.update(
        {
            "records": counts["records"],
            "html_pages": counts["html_pages"],
            "images": images,
            "pairs": counts["pairs"],
            "skipped_records": _with_prefix(counts, "skip_"),
            "cut_pages": _with_prefix(counts, "cut_"),
            "charset_sources": _with_prefix(counts, "charset_"),
            "file_bytes": size,
            "mb_per_s": round(size / 1e6 / seconds, 3) if seconds > 0 else None,
            "format": file_format,
        }
    )
    return table.to_arrow()


def _with_prefix(counts: Counter, prefix: str) -> dict[str, int]:
    return {key[len(prefix) :]: n for key, n in sorted(counts.items()) if key.startswith(prefix)}


def _warc_pages(
    url: str, stats: ShardStats, counts: Counter, drops: Counter, html_parser: str
) -> Iterator[tuple[int, PageImages]]:
    """(record offset, page images) for every HTML 200 response of a WARC file."""
    for record in iter_records(url, RESPONSE_RECORDS, stats, parse_http=True):
        counts["records"] += 1
        if record.http_status != 200:
            counts["skip_http_status"] += 1
            continue
        if not is_html(record):
            counts["skip_not_html"] += 1
            continue
        body, cut = bounded_page(record.body)
        if cut is not None:
            counts[f"cut_{cut}"] += 1
        encoding, source = sniff_encoding(body, record.http_charset)
        counts[f"charset_{source}"] += 1
        try:
            markup = markup_for_parser(body, encoding)
            page = extract_page_images(markup, record.target_uri, drops, html_parser)
        except Exception as exc:  # noqa: BLE001 - one unparseable page must not stop the file
            stats.error(
                "unparseable_html", f"{url}@{record.offset}", f"{type(exc).__name__}: {exc}"
            )
            continue
        yield record.offset, page


def _wat_pages(
    url: str, stats: ShardStats, counts: Counter, drops: Counter
) -> Iterator[tuple[int, PageImages]]:
    """(record offset, page images) for every WAT record describing an HTML response."""
    for record in iter_records(url, METADATA_RECORDS, stats, parse_http=False):
        counts["records"] += 1
        try:
            page = page_images_from_wat(record.body, drops)
        except WatRecordError as exc:
            stats.error("bad_wat_record", f"{url}@{record.offset}", str(exc))
            continue
        if page is None:
            counts["skip_not_html"] += 1
            continue
        yield record.offset, page
