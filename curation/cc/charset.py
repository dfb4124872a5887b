"""Which character encoding a crawled HTML page is in, in the order a browser decides it.

A byte-order mark wins; then the HTTP `Content-Type: ...; charset=` header; then a `<meta charset>`
or `<meta http-equiv="Content-Type" content="...; charset=...">` near the top of the page; then
statistical detection (uchardet, through resiliparse). Labels are mapped to the WHATWG set the web
actually uses (e.g. ISO-8859-1 → windows-1252, GB2312 → GBK), which is what browsers
decode with. A label Python cannot decode falls through to the next source.
"""

from __future__ import annotations

import codecs
import re

from resiliparse.parse.encoding import bytes_to_str, detect_encoding, map_encoding_to_html5

# The HTML spec's prescan looks at the first 1024 bytes; real pages often put the meta tag after
# long <script>/<link> blocks, so look a little further (still a cheap regex over bytes).
META_SCAN_BYTES = 4096
_META_CHARSET = re.compile(
    rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:\-]+)""", re.IGNORECASE
)
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
UTF8 = "utf-8"


def _python_encoding(label: str | None) -> str | None:
    """The WHATWG-mapped Python codec name for `label`, or None if unknown or undecodable."""
    if not label:
        return None
    mapped = map_encoding_to_html5(label.strip().strip("\"'"), fallback_utf8=False)
    if mapped is None:
        return None
    try:
        return codecs.lookup(mapped).name
    except LookupError:
        return None


def sniff_encoding(body: bytes, http_charset: str | None) -> tuple[str, str]:
    """(Python codec name, where it came from: "bom" | "header" | "meta" | "detected")."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            return name, "bom"
    from_header = _python_encoding(http_charset)
    if from_header is not None:
        return from_header, "header"
    match = _META_CHARSET.search(body, 0, META_SCAN_BYTES)
    if match is not None:
        from_meta = _python_encoding(match.group(1).decode("ascii"))
        # A page served as bytes cannot be UTF-16 in the meta sense (the spec says: treat as UTF-8).
        if from_meta is not None and not from_meta.startswith("utf-16"):
            return from_meta, "meta"
    detected = _python_encoding(detect_encoding(body)) or UTF8
    return detected, "detected"


def markup_for_parser(body: bytes, encoding: str) -> str | bytes:
    """What to hand the HTML parser: UTF-8 bytes as they are (lexbor parses UTF-8 natively,
    which spares a decode and re-encode on most of the web), anything else decoded to str."""
    if encoding == UTF8:
        return body.removeprefix(codecs.BOM_UTF8)
    return bytes_to_str(body, encoding, errors="replace", strip_bom=True)
