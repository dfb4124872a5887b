"""The <img>, <base> and <html> tags of a page, found by a tokenizer-level scan that builds no DOM.

Common Crawl pages are mostly scripts, styles and text; an HTML tree builder spends most of its
time on elements we never look at. This scanner skips every stretch of the page that carries
nothing of interest (text, comments, bogus comments, doctypes, and every tag whose name is not one
we need, attributes and quoted values included, so a `>` or `<img` inside a quoted value is never
taken for markup) and stops only at the tags that matter. It exists twice, with identical answers
(tests/curation/cc/test_html_scan.py checks them on every differential input and on fuzzed pages):
`scan_page_c`, compiled from curation/cc/_html_scan.c (forward-only byte loops, linear time on any
input), which `scan_page` is; and `scan_page_python` below, one `re` pass per skipped stretch,
which is the reference the C code follows and the fallback (with a warning) when the extension is
not built. The tags that matter:

- `<img>` (and `<image>`, which the tree builder renames to img): their attributes;
- `<base>`: its href (the first non-empty one is the page's base);
- `<html>`: the first `lang` any of them declares (later `<html>` tags add the attributes the root
  does not have yet, as the tree builder does);
- the elements that change how the tokenizer reads what follows: raw text (`<script>`, with its
  `<!--`/`<script>` escape states; `<style>`, `<xmp>`, `<iframe>`, `<noembed>`, `<noframes>`),
  escapable raw text (`<textarea>`, `<title>`), `<plaintext>` (the rest of the page is text);
  `<template>` (its content is a separate fragment: lexbor's `tags()` does not list what is in it,
  so neither do we); `<svg>`/`<math>` foreign content, where those raw-text tags are ordinary
  elements and `<![CDATA[...]]>` is a section of text, until a tag that breaks out of it (`<img>`,
  `<p>`, `<div>`, ...: the spec's list) or an HTML integration point (`<foreignObject>`, `<desc>`,
  `<title>` in SVG; `<mi>`, `<mo>`, `<mn>`, `<ms>`, `<mtext>` in MathML).

Attributes are tokenized as the HTML spec says: names up to whitespace, `/`, `>` or `=` (a name may
start with `=`), values double-quoted, single-quoted or unquoted, a missing space between two
attributes allowed, names lower-cased (ASCII), the first of duplicate names wins, NUL becomes
U+FFFD, CR LF and CR become LF, and character references are decoded with the spec's attribute
rule (a named reference without `;` followed by `=` or an alphanumeric stays as written:
`&copy=1` is not `©=1`; numeric references map 0 / surrogates / > U+10FFFF to U+FFFD and 0x80-0x9F
through windows-1252, as lexbor does; `html.unescape` differs on both counts). A tag cut by the end
of the page (a truncated record) is not a tag, as in the spec. UTF-8 input is scanned as bytes;
invalid UTF-8 in a value becomes U+FFFD, as lexbor's decoder does.

Where this differs from lexbor's tree (`tags("img")` on the whole DOM), on markup that real pages
do not carry; the differential test (tests/curation/cc/test_html_scan.py) pins the rest:

- `<frameset>`: lexbor ignores every `<img>` after a `<frameset>` that the tree builder accepts
  (in frameset mode), as the spec says; the scanner keeps them (the spec's frameset-ok flag needs
  the whole insertion-mode machine; a frameset page with `<img>` in it is broken markup either
  way). This is the scanner's one difference on the differential test, asserted there.
- Foreign content is tracked by a stack of `<svg>`/`<math>` roots and integration points, not the
  full stack of open elements: an end tag such as `</svg>` written directly inside an integration
  point's HTML content closes the integration point and the `<svg>` here; the tree builder may
  treat it differently depending on which HTML elements are open there.
- `<annotation-xml encoding="text/html">` is not treated as an integration point, and a `<font>`
  inside foreign content breaks out only when it has a color, face or size attribute (as the
  spec says) - both as lexbor, but untested beyond that.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from html.entities import html5 as _NAMED_REFERENCES

_WS = rb"\t\n\f\r "
# The rest of a tag after its name: attributes (possessive, so a tag cut by the end of the page
# runs to the end, as the tokenizer's eof-in-tag state does) and the closing `>` when there is one.
_ATTRIBUTES = (
    rb"(?:[\t\n\f\r /]++|[^\t\n\f\r />][^\t\n\f\r /=>]*+"
    rb"(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(?:\"[^\"]*+\"?|'[^']*+'?|[^\t\n\f\r >]*+))?)*+"
)
# The rest of a tag after its name; group 1 is its closing `>` (None: cut by the end of the page).
TAG_REST = re.compile(_ATTRIBUTES + rb"(>)?")
TAG_REST_TEXT = re.compile(TAG_REST.pattern.decode())
_ATTRIBUTE = re.compile(
    rb"([^\t\n\f\r />][^\t\n\f\r /=>]*)"
    rb"(?:[\t\n\f\r ]*=[\t\n\f\r ]*(?:\"([^\"]*)\"|'([^']*)'|([^\t\n\f\r >]*)))?"
)
_TAG_NAME = rb"[A-Za-z][^\t\n\f\r />]*+"
_NAME_END = rb"(?=[\t\n\f\r />])"
_COMMENT = rb"<!--(?:>|->|(?s:.*?)--!?>|(?s:.*+))"
_BOGUS = rb"<[!?][^>]*+>?|</>|</(?![A-Za-z])[^>]*+>?"
_CDATA = rb"<!\[CDATA\[(?:(?s:.*?)\]\]>|(?s:.*+))"

RAW_TEXT = ("script", "style", "xmp", "iframe", "noembed", "noframes", "textarea", "title")
_START_HTML = frozenset(("img", "image", "base", "html", "plaintext", "template", "svg", "math"))
# Start tags that end foreign content (the spec's "in foreign content" list; font: with attrs).
BREAKOUT = frozenset(
    "b big blockquote body br center code dd div dl dt em embed h1 h2 h3 h4 h5 h6 head hr i img "
    "li listing menu meta nobr ol p pre ruby s small span strong strike sub sup table tt u ul var "
    "font".split()
)
_INTEGRATION_POINTS = {
    "svg": frozenset(("foreignobject", "desc", "title")),
    "math": frozenset(("mi", "mo", "mn", "ms", "mtext")),
}
_ALL_INTEGRATION_POINTS = frozenset().union(*_INTEGRATION_POINTS.values())
_START_FOREIGN = BREAKOUT | {"svg", "math", "base"} | _ALL_INTEGRATION_POINTS


def _names(names) -> bytes:
    return b"|".join(re.escape(name.encode()) for name in sorted(names, key=len, reverse=True))


@functools.lru_cache(maxsize=None)
def _next_pattern(foreign: bool, end_names: frozenset[str]) -> re.Pattern[bytes]:
    """Skip everything up to the next tag among the interesting ones of this state; match it.

    group 1: "/" for an end tag; group 2: the tag name as written."""
    starts = _START_FOREIGN if foreign else _START_HTML | set(RAW_TEXT)
    start_skip = rb"<(?!(?i:" + _names(starts) + rb")" + _NAME_END + rb")" + _TAG_NAME + _ATTRIBUTES
    end_skip = rb"</"
    if end_names:
        end_skip += rb"(?!(?i:" + _names(end_names) + rb")" + _NAME_END + rb")"
    end_skip += _TAG_NAME + _ATTRIBUTES
    alternatives = [rb"[^<]++", _COMMENT]
    if foreign:
        alternatives.append(_CDATA)
    alternatives += [_BOGUS, start_skip + rb">?", end_skip + rb">?", rb"<(?![A-Za-z!?/])"]
    skip = rb"(?:" + rb"|".join(alternatives) + rb")*+"
    return re.compile(skip + rb"<(/?)(" + _TAG_NAME + rb")")


@functools.lru_cache(maxsize=None)
def _raw_text_end(name: str) -> re.Pattern[bytes]:
    return re.compile(rb"</(?i:" + name.encode() + rb")" + _NAME_END)


_SCRIPT_DATA = re.compile(rb"<!--|</(?i:script)(?=[\t\n\f\r />])")
_SCRIPT_ESCAPED = re.compile(rb"-->|<(/?)(?i:script)(?=[\t\n\f\r />])")
_SCRIPT_DOUBLE_ESCAPED = re.compile(rb"-->|</(?i:script)(?=[\t\n\f\r />])")


def _script_end(data: bytes, pos: int) -> int:
    """Where the `</script` that ends script data starting at `pos` begins (len(data): none).

    Follows the tokenizer's script data, escaped (after `<!--`) and double-escaped (after a
    `<script` inside the escaped part) states: in the last, `</script>` does not end the script."""
    state = "data"
    while True:
        if state == "data":
            match = _SCRIPT_DATA.search(data, pos)
            if match is None:
                return len(data)
            if match.group() != b"<!--":
                return match.start()
            state, pos = "escaped", match.start() + 2  # `<!-->` returns to data at once
        elif state == "escaped":
            match = _SCRIPT_ESCAPED.search(data, pos)
            if match is None:
                return len(data)
            if match.group() == b"-->":
                state = "data"
            elif match.group(1):
                return match.start()
            else:
                state = "double"
            pos = match.end()
        else:
            match = _SCRIPT_DOUBLE_ESCAPED.search(data, pos)
            if match is None:
                return len(data)
            state = "data" if match.group() == b"-->" else "escaped"
            pos = match.end() if state == "data" else match.start() + 8


# Numeric character references 0x80-0x9F: the spec's windows-1252 table (lexbor's too).
_C1 = {}
for _code in range(0x80, 0xA0):
    try:
        _C1[_code] = bytes([_code]).decode("cp1252")
    except UnicodeDecodeError:
        _C1[_code] = chr(_code)
_REFERENCE = re.compile(r"&(?:#([0-9]+);?|#[xX]([0-9A-Fa-f]+);?|([A-Za-z][A-Za-z0-9]*)(;?))")
_LONGEST_LEGACY = max(len(name) for name in _NAMED_REFERENCES if not name.endswith(";"))


def _replace_reference(match: re.Match[str]) -> str:
    decimal, hexadecimal, name, semicolon = match.groups()
    if name is None:
        number = int(decimal, 10) if decimal is not None else int(hexadecimal, 16)
        if number == 0 or number > 0x10FFFF or 0xD800 <= number <= 0xDFFF:
            return "\ufffd"
        return _C1.get(number) or chr(number)
    if semicolon and name + ";" in _NAMED_REFERENCES:
        return _NAMED_REFERENCES[name + ";"]
    # The longest legacy name (no `;`) the text starts with; in an attribute it is decoded only
    # when neither `=` nor an alphanumeric follows it.
    for length in range(min(len(name), _LONGEST_LEGACY), 1, -1):
        prefix = name[:length]
        if prefix in _NAMED_REFERENCES:
            following = name[length : length + 1] or semicolon
            if not following:
                following = match.string[match.end() : match.end() + 1]
            if following == "=" or following.isascii() and following.isalnum():
                return match.group()
            return _NAMED_REFERENCES[prefix] + name[length:] + semicolon
    return match.group()


def attribute_value(raw: bytes) -> str:
    """An attribute value's bytes (UTF-8) as the HTML tokenizer delivers them."""
    value = raw.decode("utf-8", "replace")
    if "\r" in value:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    if "\0" in value:
        value = value.replace("\0", "\ufffd")
    if "&" in value:
        value = _REFERENCE.sub(_replace_reference, value)
    return value


def tag_attributes(data: bytes, start: int, end: int) -> dict[str, str | None]:
    """The attributes of the tag whose attribute text is data[start:end] (first duplicate wins).

    A value-less attribute maps to None, as selectolax reports it."""
    attributes: dict[str, str | None] = {}
    for match in _ATTRIBUTE.finditer(data, start, end):
        name = match.group(1).lower().decode("utf-8", "replace").replace("\0", "\ufffd")
        if name in attributes:
            continue
        raw = match.group(2)
        if raw is None:
            raw = match.group(3)
            if raw is None:
                raw = match.group(4)
        attributes[name] = None if raw is None else attribute_value(raw)
    return attributes


@dataclass(slots=True)
class ScannedPage:
    """What the extractor needs from a page: its images' attributes, its first base href, lang."""

    images: list[dict[str, str | None]] = field(default_factory=list)
    base_href: str | None = None
    lang: str | None = None


def scan_page_python(markup: str | bytes) -> ScannedPage:
    """The `<img>` attributes, first non-empty `<base href>` and root `lang` of one page."""
    data = markup if isinstance(markup, bytes) else markup.encode("utf-8", "surrogatepass")
    page = ScannedPage()
    html_seen_lang = False
    template_depth = 0
    frames: list[
        tuple[str, str]
    ] = []  # ("foreign", "svg"|"math") or ("point", name), innermost last
    # How many frames of each name are open: an end tag with none open skips the backward search
    # (a page of many open <svg> then many </math> would otherwise scan in quadratic time).
    open_count: Counter[str] = Counter()
    pos, size = 0, len(data)
    while pos < size:
        foreign = bool(frames) and frames[-1][0] == "foreign"
        if foreign:
            end_names = frozenset(("svg", "math", "p", "br"))
        elif frames:
            end_names = _ALL_INTEGRATION_POINTS | {"svg", "math", "template"}
        else:
            end_names = frozenset(("template",)) if template_depth else frozenset()
        match = _next_pattern(foreign, end_names).match(data, pos)
        if match is None:
            break
        name = match.group(2).lower().decode("utf-8", "replace")
        rest = TAG_REST.match(data, match.end())
        pos = rest.end()
        if rest.group(1) is None:
            break  # a tag cut by the end of the page is no tag
        if match.group(1):  # an end tag
            if name == "template":
                template_depth = max(template_depth - 1, 0)
            elif foreign and name in ("p", "br"):
                while frames and frames[-1][0] == "foreign":
                    open_count[frames.pop()[1]] -= 1
            elif open_count[name] and (name in ("svg", "math") or name in _ALL_INTEGRATION_POINTS):
                for index in range(len(frames) - 1, -1, -1):
                    if frames[index][1] == name:
                        open_count.subtract(frame[1] for frame in frames[index:])
                        del frames[index:]
                        break
            continue
        attributes_end = pos - 1
        if foreign:
            if name == "base":
                _note_base(page, data, match.end(), attributes_end, template_depth)
                continue
            if name in BREAKOUT:
                if name == "font" and not (
                    {"color", "face", "size"}
                    & tag_attributes(data, match.end(), attributes_end).keys()
                ):
                    continue
                while frames and frames[-1][0] == "foreign":
                    open_count[frames.pop()[1]] -= 1
                # and on as HTML
            else:
                root = next(frame[1] for frame in reversed(frames) if frame[0] == "foreign")
                if _self_closing(data, match.end(), pos):
                    continue
                if name in ("svg", "math"):
                    frames.append(("foreign", name))
                    open_count[name] += 1
                elif name in _INTEGRATION_POINTS[root]:
                    frames.append(("point", name))
                    open_count[name] += 1
                continue
        if name in ("img", "image"):
            if not template_depth:
                page.images.append(tag_attributes(data, match.end(), attributes_end))
        elif name == "base":
            _note_base(page, data, match.end(), attributes_end, template_depth)
        elif name == "html":
            if not template_depth and not html_seen_lang:
                lang = tag_attributes(data, match.end(), attributes_end).get("lang", False)
                if lang is not False:
                    page.lang, html_seen_lang = lang, True
        elif name in RAW_TEXT:
            end = (
                _script_end(data, pos)
                if name == "script"
                else _raw_text_end(name).search(data, pos)
            )
            pos = end if isinstance(end, int) else (end.start() if end else size)
            # the end tag (with any attributes it has) is skipped by the next pattern
        elif name == "plaintext":
            break
        elif name == "template":
            template_depth += 1
        elif name in ("svg", "math"):
            if not _self_closing(data, match.end(), pos):
                frames.append(("foreign", name))
                open_count[name] += 1
    return page


def scan_page_c(markup: str | bytes) -> ScannedPage:
    """scan_page_python's answer, from the compiled scanner (curation/cc/_html_scan.c)."""
    if _html_scan is None:
        raise RuntimeError("curation/cc/_html_scan.c is not built: run `make setup`")
    images, base_href, lang = _html_scan.scan(markup)
    return ScannedPage(images, base_href, lang)


try:
    from curation.cc import _html_scan
except ImportError as missing:  # not built: `make setup` (pip install -e .) compiles it
    _html_scan = None
    SCAN_IMPLEMENTATION = "python"
    scan_page = scan_page_python
    logging.getLogger(__name__).warning(
        "the compiled page scanner is not built (%s): html_parser='scan' runs the slower Python "
        "scanner; `make setup` or `python setup.py build_ext --inplace` builds it",
        missing,
    )
else:
    SCAN_IMPLEMENTATION = "c"
    scan_page = scan_page_c


def _note_base(page: ScannedPage, data: bytes, start: int, end: int, template_depth: int) -> None:
    if page.base_href is None and not template_depth:
        href = tag_attributes(data, start, end).get("href")
        if href:
            page.base_href = href


def _self_closing(data: bytes, attributes_start: int, tag_end: int) -> bool:
    """Whether the tag ends in `/>` with the `/` not part of an unquoted attribute value."""
    if data[tag_end - 2 : tag_end] != b"/>":
        return False
    last = None
    for last in _ATTRIBUTE.finditer(data, attributes_start, tag_end - 1):
        pass
    return last is None or last.end() < tag_end - 1
