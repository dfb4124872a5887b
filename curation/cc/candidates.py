"""The candidate pair: one image URL a page shows, with the text the page gives it.

Both readers (WARC HTML and WAT links) produce `ImageRef`s; `CandidateTable` turns the refs that
pass the text filters into the Parquet rows of the candidates contract (see the schema below).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from curation.cc.text_filters import TextFilters

CANDIDATE_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
        ("text_source", pa.string()),
        ("page_url", pa.string()),
        ("warc_path", pa.string()),
        ("warc_offset", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("lang", pa.string()),
        ("source", pa.string()),
    ]
)
CC_SOURCE = "cc"
INT32_MAX = 2**31 - 1


def pair_uid(url: str, text: str) -> str:
    """128-bit blake2b of url + TAB + text, as 32 hex digits (the pool's join key)."""
    return hashlib.blake2b(f"{url}\t{text}".encode(), digest_size=16).hexdigest()


def collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


def parse_dimension(value: str | None) -> int | None:
    """An <img width/height> attribute as pixels ("300", "300px"); None for "50%", "auto", junk."""
    if not value:
        return None
    if not (value.isascii() and value.isdigit()):
        value = value.strip().lower().removesuffix("px").strip()
        if not (value.isascii() and value.isdigit()):
            return None
    number = int(value)
    return number if 0 < number <= INT32_MAX else None


@dataclass(slots=True)
class ImageRef:
    """One <img> of a page: its resolved URL and the raw texts the page gives it."""

    url: str
    alt: str
    title: str
    width: int | None = None
    height: int | None = None


@dataclass(slots=True)
class PageImages:
    page_url: str
    lang: str | None
    refs: list[ImageRef]


class CandidateTable:
    """Accumulates the candidate rows of one input file, column by column."""

    def __init__(self, filters: TextFilters, warc_path: str, source: str = CC_SOURCE):
        self.filters = filters
        self.warc_path = warc_path
        self.source = source
        self.columns: dict[str, list] = {name: [] for name in CANDIDATE_SCHEMA.names}

    def __len__(self) -> int:
        return len(self.columns["uid"])

    def add_page(self, page: PageImages, warc_offset: int, drops: Counter) -> int:
        """Add the pairs of one page that pass the filters; count the others in `drops`."""
        kept = 0
        filters = self.filters
        # Language detection (~7 µs a text) is the dearest step: without a language filter the
        # rejection does not depend on it, so texts the filters drop are never detected.
        detect_first = filters.languages is not None
        for ref in page.refs:
            text, text_source = (ref.alt, "alt") if ref.alt else (ref.title, "title")
            if not text:
                drops["no_text"] += 1
                continue
            lang = page.lang
            if not lang and detect_first:
                lang = filters.detect_language(text)
            reason = filters.rejection(text, lang)
            if reason is not None:
                drops[reason] += 1
                continue
            if not lang and not detect_first:
                lang = filters.detect_language(text)
            columns = self.columns
            columns["uid"].append(pair_uid(ref.url, text))
            columns["url"].append(ref.url)
            columns["text"].append(text)
            columns["text_source"].append(text_source)
            columns["page_url"].append(page.page_url)
            columns["warc_path"].append(self.warc_path)
            columns["warc_offset"].append(warc_offset)
            columns["width"].append(ref.width)
            columns["height"].append(ref.height)
            columns["lang"].append(lang)
            columns["source"].append(self.source)
            kept += 1
        return kept

    def to_arrow(self) -> pa.Table:
        return pa.table(self.columns, schema=CANDIDATE_SCHEMA)
