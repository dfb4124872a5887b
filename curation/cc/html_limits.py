"""Bound what one page can cost the HTML parser: a size cap and a nesting-depth cap.

Common Crawl stores at most 1 MiB of a payload (the rest is cut, `WARC-Truncated: length`); we cut
every page there too, whatever archive it comes from. Size alone is not enough: the HTML tree
builder walks its stack of open elements for many start and end tags (a `<div>` first looks for
an open `<p>` to close), so parse time grows with the square of the nesting depth. lexbor took
0.6 / 2.1 / 7.2 s for 80 / 160 / 320 KB of nested `<div>`s, and a 1 MiB page would take minutes.

So a page is also cut where its nesting first gets deeper than `MAX_NESTING_DEPTH`. The depth is
estimated from the tags alone (opening tags minus closing tags, not counting void elements and
the ones the parser closes by itself when a sibling opens), with numpy over the positions of `<`.
Pages with few tags are not scanned (their worst case is cheap). A cut page keeps the
images before the cut; the extractor counts cut pages by cause.
"""

from __future__ import annotations

import numpy as np

MAX_PAGE_BYTES = 1 << 20  # Common Crawl's payload limit
# Chromium stops nesting at 512; with 2,000 the worst page left costs lexbor well under a second.
MAX_NESTING_DEPTH = 2000
# Below this many tags even the worst nesting costs lexbor < 0.1 s, so the scan (~0.1 µs a tag)
# is skipped: most pages are not scanned at all.
SCAN_ABOVE_TAGS = 5000
# Start tags that never hold their own children open: void elements, and elements the parser
# closes implicitly when the next one of their kind (or their parent's end) comes.
NON_NESTING_TAGS = (
    b"area",
    b"base",
    b"br",
    b"col",
    b"embed",
    b"hr",
    b"img",
    b"input",
    b"link",
    b"meta",
    b"param",
    b"source",
    b"track",
    b"wbr",
    b"p",
    b"li",
    b"dt",
    b"dd",
    b"option",
    b"tr",
    b"td",
    b"th",
)
_NAME_BYTES = 8  # tag names compared as one little-endian uint64 of their first 8 bytes
_LT, _SLASH, _GT = ord("<"), ord("/"), ord(">")


def _name_key(name: bytes) -> int:
    return int.from_bytes(name[:_NAME_BYTES].ljust(_NAME_BYTES, b"\0"), "little")


_NON_NESTING_KEYS = np.array(sorted(_name_key(tag) for tag in NON_NESTING_TAGS), np.uint64)


def bounded_page(body: bytes) -> tuple[bytes, str | None]:
    """`body`, cut so that it cannot stall the parser, and why it was cut ("size", "depth")."""
    reason = None
    if len(body) > MAX_PAGE_BYTES:
        body, reason = body[:MAX_PAGE_BYTES], "size"
    # A tag takes at least 3 bytes, so a short page cannot have that many. numpy counts the rest
    # in ~1% of the parse time (bytes.count(b"<") took 5%).
    if (
        len(body) > 3 * SCAN_ABOVE_TAGS
        and np.count_nonzero(np.frombuffer(body, np.uint8) == _LT) > SCAN_ABOVE_TAGS
    ):
        cut = depth_cut(body, MAX_NESTING_DEPTH)
        if cut is not None:
            body, reason = body[:cut], "depth"
    return body, reason


def depth_cut(markup: bytes, limit: int) -> int | None:
    """The offset of the first tag at which the estimated nesting depth exceeds `limit`."""
    data = np.frombuffer(markup, np.uint8)
    starts = np.flatnonzero(data[:-1] == _LT)
    following = data[starts + 1]
    closing = following == _SLASH
    letter = following | 0x20  # ASCII lower case
    opening = (letter >= ord("a")) & (letter <= ord("z"))
    opening &= ~_is_non_nesting(data, starts) & ~_is_self_closed(data, starts)
    depth = np.cumsum(opening.astype(np.int32) - closing.astype(np.int32))
    over = np.flatnonzero(depth > limit)
    return int(starts[over[0]]) if len(over) else None


def _is_non_nesting(data: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Whether the tag name after each `<` is one of NON_NESTING_TAGS (case-insensitive)."""
    padded = np.concatenate([data, np.zeros(_NAME_BYTES + 1, np.uint8)])
    names = padded[starts[:, None] + 1 + np.arange(_NAME_BYTES)] | 0x20
    # A name is letters and digits: keep the bytes before the first other one, zero the rest.
    in_name = ((names >= ord("a")) & (names <= ord("z"))) | (
        (names >= ord("0")) & (names <= ord("9"))
    )
    names *= np.logical_and.accumulate(in_name, axis=1)
    keys = np.ascontiguousarray(names).view(np.uint64).ravel()
    position = np.searchsorted(_NON_NESTING_KEYS, keys).clip(max=len(_NON_NESTING_KEYS) - 1)
    return _NON_NESTING_KEYS[position] == keys


def _is_self_closed(data: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Whether each tag ends with `/>` (`<svg/>`, foreign content): it opens nothing."""
    ends = np.flatnonzero(data == _GT)
    position = np.searchsorted(ends, starts)
    closed = np.zeros(len(starts), bool)
    has_end = position < len(ends)
    end_at = ends[position[has_end]]
    closed[has_end] = (end_at > 0) & (data[end_at - 1] == _SLASH)
    return closed
