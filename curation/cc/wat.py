"""WAT metadata record → the images its page shows (Common Crawl's pre-parsed links).

A WAT file holds one JSON metadata record per WARC record. For an HTML response the JSON has
`Envelope.Payload-Metadata.HTTP-Response-Metadata.HTML-Metadata` with `Head.Base` and a `Links`
list whose `IMG@/src` entries carry the raw `src` and the `alt`/`title` texts, already decoded to
Unicode by the crawler. Common Crawl's own WAT files list only `IMG@/src`; WAT writers that also
list an <img>'s other URL attributes (`IMG@/srcset`, `IMG@/data-src`, ...) write them as adjacent
entries with the same texts, which we fold back into one image and then pick the URL exactly as
the HTML path does (largest srcset, then lazy attributes, then src).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from curation.cc.candidates import ImageRef, PageImages, collapse_whitespace
from curation.cc.html_images import (
    LAZY_SRC_ATTRIBUTES,
    SRCSET_ATTRIBUTES,
    image_url_candidates,
    resolve_first,
)
from curation.cc.urls import BaseUrl, UrlRejected, resolve

IMAGE_LINK_PREFIX = "IMG@/"
# The order a tag's attribute entries are listed in; a repeat or step back starts the next image.
_ATTRIBUTE_RANK = {
    name: rank for rank, name in enumerate(("src", *SRCSET_ATTRIBUTES, *LAZY_SRC_ATTRIBUTES))
}


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
    base = BaseUrl(base_url)
    for attributes in _images_of(links if isinstance(links, list) else []):
        url, reason = resolve_first(image_url_candidates(attributes), base)
        if url is None:
            drops[reason] += 1
            continue
        refs.append(
            ImageRef(
                url=url,
                alt=collapse_whitespace(attributes.get("alt") or ""),
                title=collapse_whitespace(attributes.get("title") or ""),
            )
        )
    return PageImages(page_url=page_url, lang=None, refs=refs)


def _images_of(links: list) -> list[dict[str, str]]:
    """The IMG@ entries of a Links list folded into one attribute dict per <img>."""
    images: list[dict[str, str]] = []
    last_rank = None
    for link in links:
        path = link.get("path") if isinstance(link, dict) else None
        if not isinstance(path, str) or not path.startswith(IMAGE_LINK_PREFIX):
            last_rank = None
            continue
        attribute = path[len(IMAGE_LINK_PREFIX) :]
        rank = _ATTRIBUTE_RANK.get(attribute)
        if rank is None:
            continue
        texts = {key: str(link[key]) for key in ("alt", "title") if link.get(key) is not None}
        current = images[-1] if images else None
        same_image = (
            current is not None
            and last_rank is not None
            and rank > last_rank
            and all(current.get(k) == texts.get(k) for k in ("alt", "title"))
        )
        if not same_image:
            current = dict(texts)
            images.append(current)
        current[attribute] = str(link.get("url") or "")
        last_rank = rank
    return images
