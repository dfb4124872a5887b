"""`Page` -> HTML bytes in the page's charset, plus the Content-Type its server sends.

Malformed pages keep their <img> tags readable by a lenient parser but drop closing tags, shout
tag names and leave safe attribute values unquoted, as much of the real web does.
"""

from __future__ import annotations

import html
import re

from curation.minicc.pages import ImgTag, Page

# Declared names as servers and authors write them (Python's codecs accept all of them).
DECLARED_CHARSET_NAMES: dict[str, str] = {
    "utf-8": "utf-8",
    "windows-1251": "windows-1251",
    "koi8-r": "KOI8-R",
    "shift_jis": "Shift_JIS",
    "gbk": "GBK",
    "euc-kr": "EUC-KR",
}
_UNQUOTED_SAFE = re.compile(r"^[A-Za-z0-9_./:-]+$")


def content_type_header(page: Page) -> str:
    if page.charset_declared == "http_header":
        return f"text/html; charset={DECLARED_CHARSET_NAMES[page.charset]}"
    return "text/html"


def _attribute(name: str, value: str | None, loose: bool) -> str:
    if value is None:
        return ""
    if loose and _UNQUOTED_SAFE.match(value):
        return f" {name.upper()}={value}"
    return f' {name}="{html.escape(value, quote=True)}"'


def _img(tag: ImgTag, loose: bool) -> str:
    attributes = "".join(_attribute(k, v, loose) for k, v in tag.attrs)
    return f"<{'IMG' if loose else 'img'}{attributes}>"


def _head(page: Page) -> list[str]:
    name = DECLARED_CHARSET_NAMES[page.charset]
    lines = ["<head>"]
    if page.charset_declared == "meta":
        lines.append(f'<meta charset="{name}">')
    elif page.charset_declared == "http_equiv":
        lines.append(f'<meta http-equiv="Content-Type" content="text/html; charset={name}">')
    lines.append(f"<title>{html.escape(page.title)}</title>")
    lines.append(f'<meta name="description" content="{html.escape(page.filler[0])}">')
    lines.append(f'<meta property="og:title" content="{html.escape(page.title)}">')
    if page.base_href:
        lines.append(f'<base href="{page.base_href}">')
    lines.append("</head>")
    return lines


def render_html(page: Page) -> str:
    loose = page.malformed
    close_p = "" if loose else "</p>"
    lines = ["<!DOCTYPE html>", f'<html lang="{page.lang}">', *_head(page), "<body>"]
    nav = " ".join(
        f'<a href="{html.escape(link)}">{html.escape(page.title)} {i}</a>'
        for i, link in enumerate(page.links)
    )
    lines.append(f"<nav>{nav}</nav>")
    lines.append(f"<h1>{html.escape(page.title)}</h1>")
    for number, tag in enumerate(page.tags):
        text = page.filler[number % len(page.filler)]
        lines.append(f"<p>{html.escape(text)}{close_p}")
        if number % 2 == 0:
            lines.append(f'<div class="figure">{_img(tag, loose)}{"" if loose else "</div>"}')
        else:
            lines.append(f"<p>{_img(tag, loose)}{close_p}")
    lines.append("<footer><p>&copy; minicc</p></footer>")
    if loose:
        lines.append("</span>")  # a stray closing tag
    else:
        lines.extend(["</body>", "</html>"])
    return "\n".join(lines) + "\n"


def render_page(page: Page) -> tuple[str, bytes]:
    """(Content-Type header value, body bytes encoded in the page's charset)."""
    text = render_html(page)
    try:
        body = text.encode(page.charset)
    except UnicodeEncodeError as error:
        raise ValueError(
            f"page {page.url}: text does not encode in {page.charset}: {error}"
        ) from None
    return content_type_header(page), body
