"""HTML page → the images it shows, with their alt/title texts.

The page's tags come from the DOM-free scanner (curation/cc/html_scan.py, compiled from
curation/cc/_html_scan.c) by default, or from selectolax's lexbor parser (`parser="lexbor"`): the
same answers (tests/curation/cc/test_html_scan.py), except that lexbor drops the `<img>`s after an
accepted `<frameset>`.

Which URL is "the image" of an <img>: the largest `srcset` candidate when there is one (the page's
best rendition), else a lazy-loading attribute (`data-src` and friends: when present, `src` is
usually a placeholder), else `src`. Candidates that cannot be fetched (data: URIs, javascript:,
unparseable) are skipped in favour of the next, so a placeholder `src="data:..."` next to a real
`data-src` still yields the real image. URLs resolve against the first `<base href>` (itself
resolved against the page URL), else the page URL.
"""

from __future__ import annotations

import re
from collections import Counter

from selectolax.lexbor import LexborHTMLParser

from curation.cc.candidates import ImageRef, PageImages, collapse_whitespace, parse_dimension
from curation.cc.html_scan import TAG_REST, TAG_REST_TEXT, scan_page
from curation.cc.urls import BaseUrl, UrlRejected, largest_srcset_candidate, resolve

SRCSET_ATTRIBUTES = ("srcset", "data-srcset", "data-lazy-srcset")
LAZY_SRC_ATTRIBUTES = (
    "data-src",
    "data-lazy-src",
    "data-original",
    "data-lazy",
    "data-url",
    "data-hi-res-src",
    "data-full-src",
)
_ALTERNATIVE_URL_ATTRIBUTES = frozenset(SRCSET_ATTRIBUTES + LAZY_SRC_ATTRIBUTES)
# The tree builder turns an <image> start tag into <img>, so a page without either has no images.
_IMG_TAG_BYTES = re.compile(rb"<im(?:g|age)[\s/>]", re.IGNORECASE)
_IMG_TAG_TEXT = re.compile(r"<im(?:g|age)[\s/>]", re.IGNORECASE)


# How a page's tags are found: "scan" (the default: curation/cc/html_scan.py, a tokenizer-level
# scan in C that builds no DOM; the extractor runs ~1.5x faster with it, see the README's
# extract.py row) or "lexbor" (selectolax's full HTML parser on the page's needed prefix).
# Same output on the differential test, except after an accepted <frameset> (lexbor drops <img>).
HTML_PARSERS = ("lexbor", "scan")
DEFAULT_HTML_PARSER = "scan"


def first_base_href(tree: LexborHTMLParser) -> str | None:
    for base in tree.tags("base"):
        href = base.attributes.get("href")
        if href:
            return href
    return None


def base_url(href: str | None, page_url: str) -> str:
    if href:
        try:
            return resolve(href, page_url)
        except UrlRejected:
            return page_url  # a broken <base> is ignored, as browsers do
    return page_url


def root_lang(tree: LexborHTMLParser) -> str | None:
    root = tree.root
    return root.attributes.get("lang") if root is not None else None


def primary_language(value: str | None) -> str | None:
    """The primary subtag of a `lang` value ("en-US" → "en"), if it is a plausible one."""
    if not value:
        return None
    primary = value.strip().split("-")[0].split("_")[0].lower()
    return primary if primary.isalpha() and 2 <= len(primary) <= 3 else None


def image_url_candidates(attributes: dict[str, str | None]) -> list[str]:
    """The URL attributes of one <img>, most preferred first."""
    if _ALTERNATIVE_URL_ATTRIBUTES.isdisjoint(attributes):  # most images: just a src
        src = attributes.get("src")
        return [src] if src else []
    candidates: list[str] = []
    for name in SRCSET_ATTRIBUTES:
        srcset = attributes.get(name)
        if srcset:
            largest = largest_srcset_candidate(srcset)
            if largest:
                candidates.append(largest)
    for name in LAZY_SRC_ATTRIBUTES:
        value = attributes.get(name)
        if value:
            candidates.append(value)
    src = attributes.get("src")
    if src:
        candidates.append(src)
    return candidates


def resolve_first(candidates: list[str], base: BaseUrl) -> tuple[str | None, str]:
    """The first candidate that resolves to a fetchable URL, else (None, why the first failed)."""
    first_reason = "img_no_url"
    for index, candidate in enumerate(candidates):
        try:
            return base.resolve(candidate), ""
        except UrlRejected as rejected:
            if index == 0:
                first_reason = rejected.reason
    return None, first_reason


# The tags lexbor's answer depends on: what follows the last of them cannot change it.
_LAST_NEEDED_BYTES = re.compile(rb"<(?:im(?:g|age)|base|html)(?=[\t\n\f\r />])", re.IGNORECASE)
_LAST_NEEDED_TEXT = re.compile(r"<(?:im(?:g|age)|base|html)(?=[\t\n\f\r />])", re.IGNORECASE)
_LONGEST_NEEDED = len("<image ")
_FIRST_CHUNK = 8192


def needed_prefix(markup: str | bytes) -> int:
    """The length of the shortest prefix of `markup` that ends after its last <img>, <image>,
    <base> and <html> tag: parsing only that prefix gives the same images, base and lang.

    HTML parsing is streaming: what the tree builder does at a tag depends only on what came
    before it, and no later token removes an <img> already inserted (foster parenting and the
    adoption agency move elements, never drop them; a <frameset> is ignored once an <img> was
    seen). So everything after the last tag that can matter is skipped, which on real pages is
    the footer, its icons and the trailing scripts and JSON state. The last occurrence is found
    textually: if it is not a real tag (inside a script, comment or attribute), the cut falls
    inside that construct, after every real tag, which is as good."""
    if isinstance(markup, bytes):
        pattern, tag_rest = _LAST_NEEDED_BYTES, TAG_REST
    else:
        pattern, tag_rest = _LAST_NEEDED_TEXT, TAG_REST_TEXT
    # Search backwards in growing chunks: the part after the last image is all that is read
    # (bytes.rfind per spelling reads the whole page once per spelling, and misses <iMg).
    last, end, size = None, len(markup), _FIRST_CHUNK
    while last is None and end > 0:
        start = max(end - size, 0)
        for last in pattern.finditer(markup, start, end + _LONGEST_NEEDED):
            pass
        end, size = start, size * 2
    if last is None:
        return len(markup)
    rest = tag_rest.match(markup, last.end())
    return rest.end() if rest.group(1) is not None else len(markup)


def may_have_images(markup: str | bytes) -> bool:
    """False only if the page certainly has no <img> (then it need not be parsed at all)."""
    pattern = _IMG_TAG_TEXT if isinstance(markup, str) else _IMG_TAG_BYTES
    return pattern.search(markup) is not None


def page_tags(
    markup: str | bytes, parser: str = DEFAULT_HTML_PARSER
) -> tuple[list[dict[str, str | None]], str | None, str | None]:
    """(the attributes of every <img>, the first non-empty <base href>, the root's lang)."""
    if parser == "scan":
        scanned = scan_page(markup)
        return scanned.images, scanned.base_href, scanned.lang
    if parser != "lexbor":
        raise ValueError(f"unknown HTML parser {parser!r}; expected one of {HTML_PARSERS}")
    end = needed_prefix(markup)
    tree = LexborHTMLParser(markup[:end] if end < len(markup) else markup)
    images = [node.attributes for node in tree.tags("img")]
    return images, first_base_href(tree), root_lang(tree)


def extract_page_images(
    markup: str | bytes, page_url: str, drops: Counter, parser: str = DEFAULT_HTML_PARSER
) -> PageImages:
    """All <img> of one page with a usable URL; the others are counted in `drops` by reason."""
    if not may_have_images(markup):
        return PageImages(page_url=page_url, lang=None, refs=[])
    images, base_href, lang = page_tags(markup, parser)
    base = BaseUrl(base_url(base_href, page_url))
    refs: list[ImageRef] = []
    for attributes in images:
        get = attributes.get
        src = get("src")
        if src and _ALTERNATIVE_URL_ATTRIBUTES.isdisjoint(attributes):  # most images
            try:
                url = base.resolve(src)
            except UrlRejected as rejected:
                drops[rejected.reason] += 1
                continue
        else:
            url, reason = resolve_first(image_url_candidates(attributes), base)
            if url is None:
                drops[reason] += 1
                continue
        alt = get("alt")
        title = get("title")
        width = get("width")
        height = get("height")
        refs.append(
            ImageRef(
                url,
                collapse_whitespace(alt) if alt else "",
                collapse_whitespace(title) if title else "",
                parse_dimension(width) if width else None,
                parse_dimension(height) if height else None,
            )
        )
    return PageImages(page_url=page_url, lang=primary_language(lang), refs=refs)
