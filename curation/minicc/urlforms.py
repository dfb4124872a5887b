"""Ways a page can write an image URL, and the normalisation an extractor is expected to apply.

The expected (truth) URL of any reference is `normalise(effective_base, raw)`: RFC 3986 resolution
against the page's <base href> (or the page URL) with the fragment dropped; nothing else changes.
"""

from __future__ import annotations

import posixpath
from urllib.parse import urldefrag, urljoin, urlsplit

JUNK_SOURCES: tuple[str, ...] = (
    "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7",
    "javascript:void(0)",
    "mailto:webmaster@localhost",
)
LAZY_PLACEHOLDER_DATA_URI = JUNK_SOURCES[0]
LAZY_ATTRIBUTES: tuple[str, ...] = ("data-src", "data-lazy-src", "data-original")


def normalise(base_url: str, raw: str) -> str:
    return urldefrag(urljoin(base_url, raw.strip())).url


def host_of(url: str) -> str:
    return urlsplit(url).netloc


def relative_reference(base_url: str, target_url: str, dot_slash: bool = False) -> str:
    """A path-relative reference from `base_url` to `target_url` (same host required)."""
    base, target = urlsplit(base_url), urlsplit(target_url)
    if base.netloc != target.netloc:
        raise ValueError(f"cannot write {target_url} relative to {base_url}: different hosts")
    base_dir = base.path if base.path.endswith("/") else posixpath.dirname(base.path) + "/"
    relative = posixpath.relpath(target.path, base_dir)
    if dot_slash and not relative.startswith("."):
        relative = "./" + relative
    return relative + (f"?{target.query}" if target.query else "")


def write_reference(form: str, base_url: str, target_url: str) -> str:
    """Write `target_url` in `form` for a page whose effective base is `base_url`."""
    target = urlsplit(target_url)
    if form == "absolute":
        return target_url
    if form == "absolute_fragment":
        return target_url + "#main"
    if form == "protocol_relative":
        return target_url[len(target.scheme) + 1 :]
    if form == "root_relative":
        if host_of(base_url) != target.netloc:
            raise ValueError(f"root-relative {target_url} needs base on {target.netloc}")
        return target.path + (f"?{target.query}" if target.query else "")
    if form == "relative":
        return relative_reference(base_url, target_url)
    if form == "relative_dot":
        return relative_reference(base_url, target_url, dot_slash=True)
    raise ValueError(f"unknown URL form {form!r}")


SAME_HOST_FORMS: tuple[str, ...] = (
    "relative",
    "relative_dot",
    "root_relative",
    "absolute",
    "protocol_relative",
    "absolute_fragment",
)
SAME_HOST_WEIGHTS: tuple[float, ...] = (0.32, 0.08, 0.28, 0.18, 0.1, 0.04)
OTHER_HOST_FORMS: tuple[str, ...] = ("absolute", "protocol_relative", "absolute_fragment")
OTHER_HOST_WEIGHTS: tuple[float, ...] = (0.7, 0.25, 0.05)
