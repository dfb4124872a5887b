from curation.cc.html_limits import (
    MAX_NESTING_DEPTH,
    MAX_PAGE_BYTES,
    SCAN_ABOVE_TAGS,
    bounded_page,
    depth_cut,
)


def test_a_long_flat_page_is_not_cut():
    """Void elements and elements closed by their next sibling do not nest, however many."""
    rows = "".join(
        f'<li><img src="/{i}.jpg" alt="photo {i}"><br><p>text {i}<input type=checkbox>'
        f"<tr><td>{i}<td>x<option>o<svg/>"
        for i in range(5000)
    )
    page = f"<html><body><ul>{rows}</ul></body></html>".encode()
    assert len(page) < MAX_PAGE_BYTES
    assert bounded_page(page) == (page, None)


def test_nesting_is_cut_at_the_first_tag_past_the_limit():
    prefix = b"<html><body>"
    page = prefix + b"<section>" * (SCAN_ABOVE_TAGS + 10)  # fewer tags are not worth a scan
    cut = depth_cut(page, MAX_NESTING_DEPTH)
    # <html>, <body> and 1998 sections make 2000 levels; the 1999th section is one too many.
    assert cut == len(prefix) + len(b"<section>") * (MAX_NESTING_DEPTH - 2)
    assert bounded_page(page) == (page[:cut], "depth")
    assert bounded_page(page[: len(page) // 2]) == (page[: len(page) // 2], None)


def test_balanced_deep_blocks_that_close_again_are_kept():
    block = b"<div>" * 1500 + b"<img src=a.jpg>" + b"</div>" * 1500
    page = block * 4
    assert bounded_page(page) == (page, None)
