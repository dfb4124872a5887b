"""HTML page → the images it shows, with their alt/title texts (selectolax's lexbor parser).

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


def page_base_url(tree: LexborHTMLParser, page_url: str) -> str:
    for base in tree.tags("base"):
        href = base.attributes.get("href")
        if href:
            try:
                return resolve(href, page_url)
            except UrlRejected:
                return page_url  # a broken <base> is ignored, as browsers do
    return page_url


def declared_language(tree: LexborHTMLParser) -> str | None:
    """The primary subtag of `<html lang>` ("en-US" → "en"), if the page declares one."""
    root = tree.root
    value = root.attributes.get("lang") if root is not None else None
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


def may_have_images(markup: str | bytes) -> bool:
    """False only if the page certainly has no <img> (then it need not be parsed at all)."""
    pattern = _IMG_TAG_TEXT if isinstance(markup, str) else _IMG_TAG_BYTES
    return pattern.search(markup) is not None


def extract_page_images(markup: str | bytes, page_url: str, drops: Counter) -> PageImages:
    """All <img> of one page with a usable URL; the others are counted in `drops` by reason."""
    if not may_have_images(markup):
        return PageImages(page_url=page_url, lang=None, refs=[])
    tree = LexborHTMLParser(markup)
    base = BaseUrl(page_base_url(tree, page_url))
    refs: list[ImageRef] = []
    for node in tree.tags("img"):
        attributes = node.attributes
        url, reason = resolve_first(image_url_candidates(attributes), base)
        if url is None:
            drops[reason] += 1
            continue
        refs.append(
            ImageRef(
                url=url,
                alt=collapse_whitespace(attributes.get("alt") or ""),
                title=collapse_whitespace(attributes.get("title") or ""),
                width=parse_dimension(attributes.get("width")),
                height=parse_dimension(attributes.get("height")),
            )
        )
    return PageImages(page_url=page_url, lang=declared_language(tree), refs=refs)
