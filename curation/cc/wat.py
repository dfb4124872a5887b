"""WAT metadata record → the images its page shows (Common Crawl's pre-parsed links).

A WAT file holds one JSON metadata record per WARC record. For an HTML response the JSON has
`Envelope.Payload-Metadata.HTTP-Response-Metadata.HTML-Metadata` with `Head.Base` and a `Links`
list whose `IMG@/src` entries carry the raw `src` and the `alt`/`title` texts, already decoded to
Unicode by the crawler. WAT keeps only `src`, so srcset and lazy-loading URLs are not available
here (the WARC path sees them); the URL is resolved and normalised exactly like the WARC path.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

from curation.cc.candidates import ImageRef, PageImages, collapse_whitespace
from curation.cc.urls import UrlRejected, resolve

IMAGE_LINK_PATH = "IMG@/src"


class WatRecordError(ValueError):
    """A WAT record whose JSON is not the documented structure."""


def _field(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def page_images_from_wat(body: bytes, drops: Counter) -> PageImages | None:
    """The page's images, or None if the record does not describe an HTML response.

    Raises WatRecordError if the body is not JSON of the WAT shape.
    """
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise WatRecordError(f"record body is not JSON: {exc}") from exc
    envelope = _field(document, "Envelope")
    if not isinstance(envelope, dict):
        raise WatRecordError("record JSON has no Envelope object")
    if _field(envelope, "WARC-Header-Metadata", "WARC-Type") != "response":
        return None
    html = _field(envelope, "Payload-Metadata", "HTTP-Response-Metadata", "HTML-Metadata")
    page_url = _field(envelope, "WARC-Header-Metadata", "WARC-Target-URI")
    if not isinstance(html, dict) or not isinstance(page_url, str):
        return None
    base_url = page_url
    base = _field(html, "Head", "Base")
    if isinstance(base, str) and base.strip():
        try:
            base_url = resolve(base, page_url)
        except UrlRejected:
            pass  # a broken <base> is ignored, as browsers do
    refs: list[ImageRef] = []
    links = html.get("Links")
    for link in links if isinstance(links, list) else ():
        if not isinstance(link, dict) or link.get("path") != IMAGE_LINK_PATH:
            continue
        try:
            url = resolve(str(link.get("url") or ""), base_url)
        except UrlRejected as rejected:
            drops[rejected.reason] += 1
            continue
        refs.append(ImageRef(url=url, alt=collapse_whitespace(str(link.get("alt") or "")),
                             title=collapse_whitespace(str(link.get("title") or ""))))
    return PageImages(page_url=page_url, lang=None, refs=refs)
