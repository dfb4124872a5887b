"""WARC → image/alt pairs: our extractor (FastWARC + a C tag scanner) vs warcio + html.parser.

The reference is written the way many pipelines do it: warcio's ArchiveIterator over every
record, the charset from the Content-Type header (else UTF-8), Python's html.parser collecting
<base href> and <img src/alt>, urljoin against the page. Ours is `curation.cc.extractor`
(charset sniffing, srcset/lazy attributes, URL normalisation, text filters, language id), run
with its default HTML parser and again with the other one ("scan": the DOM-free scanner compiled
from curation/cc/_html_scan.c, or the Python one when that is not built, as printed; "lexbor").
Both run in this process, one after the other, single-threaded, on the same files; rates are per
CPU second of this process, i.e. per core, so a busy machine slows both alike.

Two limit passes on the same files, in the same run, bound what any extractor built on these
libraries can reach: FastWARC reading every response body (decompression and WARC parsing only),
and FastWARC + lexbor parsing every body and selecting its `img` elements (`css("img")`, no
attribute read). The target is ours >= 0.8 of the parse-only limit. The last line is
`RESULT {"vs_reference": ..., "vs_limit": ..., "target_met": ...}` (vs_limit against parse-only).

Default input: generated WARC files of realistic pages (Common Crawl-like record triples
request/response/metadata; HTML of 20–120 KB per page with head metadata, stylesheets, inline and
external scripts, JSON-LD, navigation, long article text, figures with src/srcset/lazy images,
sidebars and footers; 10% of pages in Russian served as windows-1251). `--input` measures any
WARC files instead (e.g. the mini Common Crawl or a downloaded CC file).

    .venv/bin/python benchmarks/extract.py [--size-mb 40] [--input 'path/*.warc.gz']
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import html
import itertools
import json
import random
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastwarc.warc import ArchiveIterator as FastwarcIterator
from fastwarc.warc import WarcRecordType
from selectolax.lexbor import LexborHTMLParser
from warcio.archiveiterator import ArchiveIterator as WarcioIterator

from curation import fsio
from curation.cc.extractor import extract_file
from curation.cc.html_images import DEFAULT_HTML_PARSER, HTML_PARSERS
from curation.cc.html_scan import SCAN_IMPLEMENTATION
from curation.cc.text_filters import TextFilters
from curation.cc.warc_writer import http_response_block, warc_record
from curation.stats import ShardStats

TARGET_RATIO = 3.0
TARGET_MB_PER_CORE = 20.0
TARGET_VS_PARSE_LIMIT = 0.8
SYLLABLES = (
    "ka",
    "lo",
    "re",
    "mi",
    "tan",
    "sol",
    "ber",
    "nu",
    "qui",
    "dra",
    "ex",
    "ion",
    "ta",
    "ven",
    "mor",
    "li",
    "pas",
    "che",
    "gro",
    "ul",
    "fa",
    "zen",
    "ri",
    "do",
    "sta",
    "pe",
)
CYRILLIC = ("ка", "ло", "ре", "ми", "тан", "сол", "бер", "ну", "дра", "ен", "та", "вен", "мор")


class ReferenceImgParser(HTMLParser):
    """What a typical pipeline does: remember <base href>, collect <img src> with alt."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.images: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
        elif tag == "img":
            values = dict(attrs)
            if values.get("src"):
                self.images.append((values["src"], (values.get("alt") or "").strip()))


def reference_extract(path: str) -> tuple[int, int]:
    """(response records read, pairs with an http(s) URL and a non-empty alt) of one WARC file."""
    records = pairs = 0
    # warcio raises at a truncated final member; like most pipelines, give up on the file there.
    with open(path, "rb") as stream, contextlib.suppress(EOFError, OSError):
        for record in WarcioIterator(stream):
            if record.rec_type != "response":
                continue
            records += 1
            content_type = record.http_headers.get_header("Content-Type") or ""
            if "html" not in content_type:
                continue
            charset = "utf-8"
            if "charset=" in content_type:
                charset = content_type.split("charset=")[-1].split(";")[0].strip()
            body = record.content_stream().read()
            try:
                text = body.decode(charset, errors="replace")
            except LookupError:
                text = body.decode("utf-8", errors="replace")
            parser = ReferenceImgParser()
            parser.feed(text)
            page = record.rec_headers.get_header("WARC-Target-URI")
            base = urljoin(page, parser.base) if parser.base else page
            for src, alt in parser.images:
                url = urljoin(base, src)
                if alt and url.startswith(("http://", "https://")):
                    pairs += 1
    return records, pairs


def limit_read(path: str) -> tuple[int, int]:
    """Limit 1: FastWARC decompresses and parses every record and reads each response's body."""
    records = body_bytes = 0
    for record in FastwarcIterator(path, record_types=WarcRecordType.response, parse_http=True):
        records += 1
        body_bytes += len(record.reader.read())
    return records, 0


def limit_parse(path: str) -> tuple[int, int]:
    """Limit 2: limit 1, plus lexbor parsing every body into a tree and selecting its <img>s."""
    records = images = 0
    for record in FastwarcIterator(path, record_types=WarcRecordType.response, parse_http=True):
        records += 1
        images += len(LexborHTMLParser(record.reader.read()).css("img"))
    return records, images


def ours_extract(path: str, html_parser: str = DEFAULT_HTML_PARSER) -> tuple[int, int]:
    stats = ShardStats()
    table = extract_file(path, "warc", TextFilters(), stats, html_parser=html_parser)
    return stats.extra["records"], table.num_rows


def ours_extract_other(path: str) -> tuple[int, int]:
    """Ours with the HTML parser that is not the default (lexbor vs the DOM-free scan)."""
    return ours_extract(path, next(p for p in HTML_PARSERS if p != DEFAULT_HTML_PARSER))


class PageWriter:
    """Realistic, varied HTML pages: Zipf-distributed words, a per-site set of class names, large
    inline scripts and JSON state blobs, inline SVG icons, so that page sizes (~100 KB) and gzip
    ratios (~4-5x) resemble Common Crawl's rather than a toy page's."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.words = [self.word(SYLLABLES) for _ in range(20000)]
        self.ru_words = [self.word(CYRILLIC) for _ in range(8000)]
        self.word_weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(20000)))
        self.ru_weights = self.word_weights[:8000]
        self.classes = [f"{self.word(SYLLABLES)}-{self.word(SYLLABLES)}" for _ in range(400)]
        self.site_classes = self.classes[:30]

    def word(self, syllables: tuple[str, ...]) -> str:
        return "".join(self.rng.choice(syllables) for _ in range(self.rng.randint(1, 4)))

    def pick_words(self, n: int, russian: bool = False) -> list[str]:
        if russian:
            return self.rng.choices(self.ru_words, cum_weights=self.ru_weights, k=n)
        return self.rng.choices(self.words, cum_weights=self.word_weights, k=n)

    def text(self, n: int, russian: bool = False) -> str:
        return " ".join(self.pick_words(n, russian)).capitalize() + "."

    def cls(self) -> str:
        return " ".join(self.rng.sample(self.site_classes, self.rng.randint(1, 3)))

    def path(self) -> str:
        return "/" + "/".join(self.pick_words(self.rng.randint(1, 4)))

    def script(self) -> str:
        names = [
            self.rng.choice(self.words[:3000]) + str(self.rng.randint(0, 99)) for _ in range(40)
        ]
        body = ";".join(
            f"var {n}=function(a,b){{return a.{self.rng.choice(names)}(b,"
            f"'{self.rng.choice(self.words[:3000])}')||{self.rng.randint(0, 9999)}}}"
            for n in names[: self.rng.randint(10, 40)]
        )
        return f"<script>(function(){{{body}}})();</script>"

    def state_blob(self, russian: bool) -> str:
        """A framework's serialised page state (Next.js, Nuxt, ...): big, repetitive JSON."""
        items = [
            {
                "id": self.rng.randint(1, 10**7),
                "slug": "-".join(self.pick_words(3)),
                "title": self.text(6, russian),
                "url": self.path(),
                "tags": self.pick_words(4),
                "published": f"2024-0{self.rng.randint(1, 9)}-1{self.rng.randint(0, 9)}",
            }
            for _ in range(self.rng.randint(20, 120))
        ]
        return f'<script id="__NEXT_DATA__" type="application/json">{json.dumps({"props": {"items": items}})}</script>'

    def icon(self) -> str:
        points = " ".join(f"{self.rng.randint(0, 24)},{self.rng.randint(0, 24)}" for _ in range(8))
        return (
            f'<svg class="icon" viewBox="0 0 24 24" width="24" height="24" aria-hidden="true">'
            f'<path d="M{points}Z" fill="currentColor"/></svg>'
        )

    def image(self, host: str, russian: bool) -> str:
        name = f"{self.path()}-{self.rng.randint(1, 10**6)}"
        kind = self.rng.random()
        alt = (
            html.escape(self.text(self.rng.randint(2, 12), russian))
            if self.rng.random() < 0.75
            else ""
        )
        if kind < 0.3:
            sizes = ", ".join(f"{name}-{w}.jpg {w}w" for w in (320, 640, 1024, 1600))
            attrs = f'src="{name}-320.jpg" srcset="{sizes}" sizes="(max-width: 600px) 100vw, 50vw"'
        elif kind < 0.45:
            attrs = (
                f'src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="//{host}{name}.jpg"'
            )
        else:
            attrs = f'src="{name}.jpg" loading="lazy"'
        return (
            f'<figure class="{self.cls()}"><img {attrs} alt="{alt}" width="{self.rng.randint(50, 1600)}" '
            f'height="{self.rng.randint(50, 1200)}"><figcaption>{self.text(self.rng.randint(3, 15), russian)}'
            f"</figcaption></figure>"
        )

    def page(self, url: str, host: str, russian: bool) -> str:
        rng = self.rng
        head = [
            f'<meta name="{rng.choice(self.words[:200])}" content="{self.text(8, russian)}">'
            for _ in range(rng.randint(5, 20))
        ]
        head += [
            f'<link rel="stylesheet" href="{self.path()}.css?v={rng.randint(1, 999)}">'
            for _ in range(rng.randint(3, 12))
        ]
        head.append(
            "<style>"
            + "".join(
                f".{c}{{margin:{rng.randint(0, 40)}px;color:#{rng.randrange(16**6):06x}}}"
                for c in rng.sample(self.classes, rng.randint(30, 150))
            )
            + "</style>"
        )
        head += [self.script() for _ in range(rng.randint(1, 4))]
        head += [
            f'<script src="https://cdn.{host}{self.path()}.js" async></script>'
            for _ in range(rng.randint(2, 8))
        ]
        nav = "".join(
            f'<li class="{self.cls()}"><a href="{self.path()}">{self.icon()}{self.text(2, russian)}</a></li>'
            for _ in range(rng.randint(20, 80))
        )
        body: list[str] = []
        for _ in range(rng.randint(8, 40)):
            body.append(f'<p class="{self.cls()}">{self.text(rng.randint(30, 160), russian)}</p>')
            if rng.random() < 0.5:
                body.append(self.image(host, russian))
        aside = "".join(
            f'<div class="{self.cls()}"><a href="{self.path()}"><img src="{self.path()}.png" '
            f'alt="{self.text(3, russian) if rng.random() < 0.5 else ""}"></a>'
            f"<span>{self.text(10, russian)}</span></div>"
            for _ in range(rng.randint(3, 15))
        )
        footer = "".join(
            f'<a href="{self.path()}">{self.icon()}{self.text(2, russian)}</a> '
            for _ in range(rng.randint(20, 60))
        )
        lang = "ru" if russian else "en"
        return (
            f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>{self.text(6, russian)}'
            f'</title>{"".join(head)}</head><body class="{self.cls()}"><header><nav><ul>{nav}</ul></nav>'
            f"</header><main><article>{''.join(body)}</article></main><aside>{aside}</aside>"
            f"<footer>{footer}{self.script()}</footer>{self.state_blob(russian)}</body></html>"
        )


def generate_warc(path: Path, target_bytes: int, seed: int) -> None:
    """Pages as CC stores them: request, response and metadata records, one gzip member each."""
    writer = PageWriter(seed)
    written = 0
    with open(path, "wb") as stream:
        index = 0
        while written < target_bytes:
            host = f"www.{writer.rng.choice(writer.words)}.example"
            url = f"https://{host}{writer.path()}-{index}.html"
            russian = writer.rng.random() < 0.1
            markup = writer.page(url, host, russian)
            body = markup.encode("cp1251" if russian else "utf-8")
            if russian:  # the header is the only declaration, as on many legacy sites
                body = body.replace(b'<meta charset="utf-8">', b"")
            block = http_response_block(body, charset="windows-1251" if russian else "utf-8")
            request = (
                f"GET {url} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: CCBot/2.0\r\n\r\n".encode()
            )
            metadata = f"fetchTimeMs: {writer.rng.randint(20, 900)}\r\ncharset-detected: UTF-8\r\n".encode()
            for warc_type, block_bytes, content_type in (
                ("request", request, "application/http; msgtype=request"),
                ("response", block, "application/http; msgtype=response"),
                ("metadata", metadata, "application/warc-fields"),
            ):
                member = gzip.compress(
                    warc_record(warc_type, url, block_bytes, content_type), compresslevel=6
                )
                stream.write(member)
                written += len(member)
            index += 1


def describe_input(files: list[str]) -> tuple[int, int, int]:
    """(HTML responses, their payload bytes, uncompressed bytes of the files), untimed."""
    pages = html_bytes = raw_bytes = 0
    for path in files:
        with gzip.open(path, "rb") as stream, contextlib.suppress(EOFError):  # truncated files
            while chunk := stream.read(1 << 22):
                raw_bytes += len(chunk)
        for record in FastwarcIterator(path, record_types=WarcRecordType.response, parse_http=True):
            if "html" in (record.http_content_type or ""):
                pages += 1
                html_bytes += len(record.reader.read())
    return pages, html_bytes, raw_bytes


def measure(name: str, extract, files: list[str]) -> dict[str, float]:
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    records = pairs = 0
    for path in files:
        file_records, file_pairs = extract(path)
        records += file_records
        pairs += file_pairs
    cpu = time.process_time() - cpu_start
    wall = time.perf_counter() - wall_start
    size_mb = sum(Path(f).stat().st_size for f in files) / 1e6
    result = {
        "records_per_s": records / cpu,
        "mb_per_s": size_mb / cpu,
        "records": records,
        "pairs": pairs,
        "cpu_s": cpu,
        "wall_s": wall,
    }
    print(
        f"{name:<34} {records:>8} records {pairs:>8} pairs  cpu {cpu:7.2f}s (wall {wall:6.2f}s)  "
        f"{result['records_per_s']:>9.0f} records/s  {result['mb_per_s']:7.2f} MB/s of .warc.gz"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", nargs="+", default=None, help="WARC files (globs) to measure")
    parser.add_argument(
        "--size-mb",
        type=float,
        default=40.0,
        help="compressed size of the generated input (split over 2 files)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where to keep generated files (reused)")
    args = parser.parse_args()
    if args.input:
        files = fsio.expand(args.input)
        described = f"{len(files)} given file(s)"
    else:
        workdir = (
            Path(args.workdir or tempfile.gettempdir())
            / f"bench-extract-{args.seed}-{args.size_mb:g}"
        )
        workdir.mkdir(parents=True, exist_ok=True)
        files = []
        for part in range(2):
            path = workdir / f"realistic-{part}.warc.gz"
            if not path.exists():
                generate_warc(
                    path.with_suffix(".tmp"), int(args.size_mb * 1e6 / 2), args.seed + part
                )
                path.with_suffix(".tmp").replace(path)
            files.append(str(path))
        described = "generated realistic pages"
    total = sum(Path(f).stat().st_size for f in files) / 1e6
    pages, html_bytes, raw_bytes = describe_input(files)
    print(
        f"input: {described}, {total:.1f} MB of .warc.gz in {len(files)} file(s); {pages} HTML "
        f"responses averaging {html_bytes / max(pages, 1) / 1e3:.0f} KB; gzip ratio "
        f"{raw_bytes / (total * 1e6):.1f}x"
    )
    # "scan" is the compiled scanner (curation/cc/_html_scan.c) unless it is not built
    print(f"html_parser='scan' runs the {SCAN_IMPLEMENTATION} scanner")
    ours_extract(files[0])  # warm imports and caches outside the timed runs
    reference = measure("reference (warcio + html.parser)", reference_extract, files)
    read_limit = measure("limit: FastWARC reads every body", limit_read, files)
    parse_limit = measure("limit: + lexbor parse, css('img')", limit_parse, files)
    ours = measure(f"ours (FastWARC + {DEFAULT_HTML_PARSER})", ours_extract, files)
    other = next(p for p in HTML_PARSERS if p != DEFAULT_HTML_PARSER)
    ours_other = measure(f"ours with --html-parser {other}", ours_extract_other, files)
    if ours_other["pairs"] != ours["pairs"]:
        print(f"WARNING: {other} gives {ours_other['pairs']} pairs, not {ours['pairs']}")
    ratio = ours["mb_per_s"] / reference["mb_per_s"]
    vs_read = ours["mb_per_s"] / read_limit["mb_per_s"]
    vs_parse = ours["mb_per_s"] / parse_limit["mb_per_s"]
    print(
        f"ratio ours / reference: {ratio:.2f}x (target >= {TARGET_RATIO:g}x); "
        f"ours {ours['mb_per_s']:.1f} MB/s of .warc.gz per core (target >= {TARGET_MB_PER_CORE:g})"
    )
    print(
        f"ratio ours / limit: {vs_parse:.2f} of FastWARC + lexbor parse-only (target >= "
        f"{TARGET_VS_PARSE_LIMIT:g}); {vs_read:.2f} of FastWARC reading alone"
    )
    for parser, run in ((DEFAULT_HTML_PARSER, ours), (other, ours_other)):
        print(
            f"  html_parser={parser}{' (default)' if parser == DEFAULT_HTML_PARSER else ''}"
            f"{f' [{SCAN_IMPLEMENTATION}]' if parser == 'scan' else ''}: "
            f"{run['mb_per_s']:.1f} MB/s, {run['mb_per_s'] / parse_limit['mb_per_s']:.2f} of "
            f"parse-only, {run['mb_per_s'] / read_limit['mb_per_s']:.2f} of reading alone"
        )
    met = (
        ratio >= TARGET_RATIO
        and ours["mb_per_s"] >= TARGET_MB_PER_CORE
        and vs_parse >= TARGET_VS_PARSE_LIMIT
    )
    result = {"vs_reference": round(ratio, 2), "vs_limit": round(vs_parse, 2), "target_met": met}
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
