"""Image URLs as pages write them → absolute, normalised http(s) URLs.

Pages write image URLs relative to `<base href>` or the page URL, protocol-relative (`//cdn/x.jpg`),
with whitespace around them, with fragments, upper-case or Unicode host names, and default ports.
Two spellings of one resource must become one string, or dedup counts them twice; so every URL
leaving this module is: resolved, http(s) only, fragment dropped, scheme and host lower-case, host in
IDNA (punycode) form, default port dropped, empty path as "/", dot segments removed, and characters a
browser would percent-encode (spaces, non-ASCII) encoded as UTF-8.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

ALLOWED_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters left alone when percent-encoding a path or query: reserved and unreserved ASCII plus
# "%" so existing escapes survive (WHATWG's path/query percent-encode sets, approximately).
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE = _PATH_SAFE + "?"
# HTML strips ASCII tab/newline anywhere in a URL attribute, and ASCII whitespace at both ends.
_TAB_NEWLINE = re.compile(r"[\t\n\r]")
_NEEDS_QUOTING = re.compile(r"[^\x21-\x7e]|[\"<>\\^`{|}]")
# Already canonical: lower-case ASCII host without trailing dot, no port or a non-default one
# without leading zeros, a path, no fragment, and only characters that normalisation leaves alone.
_ALREADY_NORMAL = re.compile(
    r"(https?)://[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::([1-9][0-9]{0,4}))?"
    r"/[A-Za-z0-9/:@!$&'()*+,;=._~%?-]*\Z"
)
MAX_PORT = 65535


class UrlRejected(ValueError):
    """A URL that cannot be an image to download; `reason` is the drop reason recorded in stats."""

    def __init__(self, reason: str, url: str):
        super().__init__(f"{reason}: {url[:200]!r}")
        self.reason = reason


def clean_attribute(value: str) -> str:
    """An attribute value as a browser reads it as a URL (stripped, tabs/newlines removed)."""
    return _TAB_NEWLINE.sub("", value.strip(" \t\n\r\f"))


def resolve(reference: str, base: str) -> str:
    """Resolve `reference` (as written in the page) against `base` and normalise it.

    Raises UrlRejected with reason "url_empty", "url_scheme" (data:, javascript:, mailto:, ...)
    or "url_invalid".
    """
    return BaseUrl(base).resolve(reference)


class BaseUrl:
    """A page's base URL, split once: a page resolves dozens of image URLs against it.

    The common reference forms (absolute, protocol-relative, root-relative, plain relative path)
    are joined by string concatenation, which gives what RFC 3986 resolution (`urljoin`) gives for
    them once `normalize` has removed dot segments; so are leading dot segments ("./", "../")
    where neither side has an empty segment ("//", which urljoin drops); the rest (query- or
    fragment-only references, and those) go through `urljoin` itself.
    """

    __slots__ = ("directory", "dot_joinable", "origin", "scheme", "url")

    def __init__(self, url: str):
        self.url = url
        try:
            parts = urlsplit(url)
        except ValueError:  # an unparseable page URL: every relative reference is unresolvable
            parts = None
        self.scheme = parts.scheme if parts else ""
        self.origin = f"{parts.scheme}://{parts.netloc}" if parts and parts.netloc else ""
        path = (parts.path or "/") if parts else "/"
        self.directory = self.origin + path[: path.rfind("/") + 1]
        # urljoin drops empty path segments ("a//b"), RFC 3986 and concatenation keep them: a
        # "./" or "../" reference is concatenated only where there are none to drop.
        self.dot_joinable = bool(self.origin) and "//" not in path

    def resolve(self, reference: str) -> str:
        reference = clean_attribute(reference)
        if not reference:
            raise UrlRejected("url_empty", reference)
        first = reference[0]
        if first == "/":
            if reference.startswith("//"):
                absolute = f"{self.scheme}:{reference}"
            else:
                absolute = self.origin + reference
        elif first == "." and self.dot_joinable and "//" not in reference:
            absolute = self.directory + reference  # `normalize` removes the dot segments
        elif first in "?#.":
            absolute = self._join(reference)
        else:
            scheme = _scheme_of(reference)
            if scheme is None:
                absolute = self.directory + reference
            elif scheme in ALLOWED_SCHEMES:
                absolute = reference
            else:
                raise UrlRejected("url_scheme", reference)
        return normalize(absolute)

    def _join(self, reference: str) -> str:
        try:
            return urljoin(self.url, reference)
        except ValueError as exc:  # e.g. an invalid IPv6 literal
            raise UrlRejected("url_invalid", reference) from exc


def normalize(url: str) -> str:
    """The canonical spelling of an absolute http(s) URL (see the module docstring)."""
    normal = _ALREADY_NORMAL.match(url)
    if normal is not None and "/." not in url:
        port = normal.group(2)  # kept as written unless it is the default one (or out of range)
        if port is None or DEFAULT_PORTS[normal.group(1)] != int(port) <= MAX_PORT:
            return url  # most URLs on the web: skip the parse and rebuild
    return rebuild_normalized(url)


def rebuild_normalized(url: str) -> str:
    """`normalize` without its fast path: parse, canonicalise every part, rebuild."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRejected("url_invalid", url) from exc
    scheme = parts.scheme.lower()
    if not scheme:  # still relative: the base it was resolved against was no absolute URL
        raise UrlRejected("url_invalid", url)
    if scheme not in ALLOWED_SCHEMES:
        raise UrlRejected("url_scheme", url)
    host = _normalize_host(parts.hostname or "", url)
    netloc = host if port is None or port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = remove_dot_segments(parts.path or "/")
    if _NEEDS_QUOTING.search(path):
        path = quote(path, safe=_PATH_SAFE)
    query = parts.query
    if query and _NEEDS_QUOTING.search(query):
        query = quote(query, safe=_QUERY_SAFE)
    return urlunsplit((scheme, netloc, path, query, ""))


def _scheme_of(reference: str) -> str | None:
    """The lower-case scheme of a URL reference, or None if it is relative."""
    colon = reference.find(":")
    if colon <= 0:
        return None
    candidate = reference[:colon]
    if candidate in ("http", "https"):  # most absolute references
        return candidate
    if not candidate[0].isascii() or not candidate[0].isalpha():
        return None
    if all(ch.isascii() and (ch.isalnum() or ch in "+-.") for ch in candidate):
        return candidate.lower()
    return None


def _normalize_host(host: str, url: str) -> str:
    host = host.rstrip(".")
    if not host:
        raise UrlRejected("url_invalid", url)
    if host.startswith("[") or ":" in host:  # IPv6 literal: urlsplit already lower-cased it
        return f"[{host.strip('[]')}]"
    if host.isascii():
        if any(ch in host for ch in ' <>\\^`{|}%"'):
            raise UrlRejected("url_invalid", url)
        return host.lower()
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise UrlRejected("url_invalid", url) from exc


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4: collapse "." and ".." segments of an absolute path."""
    if "." not in path:
        return path
    segments = path.split("/")
    output: list[str] = []
    for segment in segments[1:]:
        if segment == ".":
            continue
        if segment == "..":
            if output:
                output.pop()
            continue
        output.append(segment)
    if segments[-1] in (".", ".."):
        output.append("")
    return "/" + "/".join(output)


def largest_srcset_candidate(srcset: str) -> str | None:
    """The URL of the largest candidate in a `srcset` attribute (by width, else density).

    Candidates are "URL [descriptor]" separated by commas; URLs may themselves contain commas
    (e.g. CDN transforms), so a comma only ends a candidate when it follows the URL's whitespace
    or descriptor, as in the HTML spec's parsing algorithm.
    """
    best_url, best_score = None, -1.0
    for url, descriptor in _simple_srcset_candidates(srcset) or _srcset_candidates(srcset):
        score = _descriptor_size(descriptor)
        if score > best_score:
            best_url, best_score = url, score
    return best_url


_SRCSET_URL = re.compile(r"[\s,]*(\S+)")


def _simple_srcset_candidates(srcset: str) -> list[tuple[str, str]] | None:
    """`_srcset_candidates` for the common spelling, by `str.split`; None where it may differ.

    Where every comma-separated part is "URL DESCRIPTOR" (or blank), no URL can contain a comma
    or end at one, so splitting gives what the spec's parser gives; a lone URL is only taken
    as the last part (elsewhere "a,b.jpg 2x" is one URL to the spec)."""
    candidates: list[tuple[str, str]] = []
    parts = srcset.split(",")
    last = len(parts) - 1
    for index, part in enumerate(parts):
        tokens = part.split()
        if len(tokens) == 2:
            candidates.append((tokens[0], tokens[1]))
        elif len(tokens) == 1 and index == last:
            candidates.append((tokens[0], ""))
        elif tokens:
            return None
    return candidates


def _srcset_candidates(srcset: str) -> list[tuple[str, str]]:
    candidates: list[tuple[str, str]] = []
    position = 0
    while (match := _SRCSET_URL.match(srcset, position)) is not None:
        url, position = match.group(1), match.end()
        descriptor = ""
        if url.endswith(","):  # "a.jpg," ends its candidate; inner commas belong to the URL
            url = url.rstrip(",")
        else:
            comma = srcset.find(",", position)
            end = len(srcset) if comma < 0 else comma
            descriptor, position = srcset[position:end].strip(), end + 1
        if url:
            candidates.append((url, descriptor))
    return candidates


def _descriptor_size(descriptor: str) -> float:
    """Width descriptors ("640w") rank by pixels; density ("2x") as that many 1000-px units."""
    for token in descriptor.split():
        try:
            if token.endswith("w"):
                return float(token[:-1])
            if token.endswith("x"):
                return float(token[:-1]) * 1000.0
        except ValueError:
            continue
    return 1000.0  # no descriptor means 1x
