from collections import Counter

import pytest

from curation.cc.charset import markup_for_parser, sniff_encoding
from curation.cc.html_images import extract_page_images

RUSSIAN = "Красный круг на синем фоне"
JAPANESE = "青い空と赤い三角形の写真"
CHINESE_PAGE = (
    "<html><head><title>中文网页</title></head><body><p>"
    + "这是一个关于几何图形的页面，里面有很多不同颜色的圆形、方形和三角形。" * 8
    + '</p><img src="/c.jpg" alt="蓝色背景上的红色圆形"></body></html>'
)


def alts(body: bytes, http_charset: str | None) -> list[str]:
    encoding, _ = sniff_encoding(body, http_charset)
    page = extract_page_images(markup_for_parser(body, encoding), "http://example.com/", Counter())
    return [ref.alt for ref in page.refs]


def test_cp1251_declared_in_the_http_header_decodes_cyrillic():
    body = f'<html><body><img src="a.jpg" alt="{RUSSIAN}"></body></html>'.encode("cp1251")
    assert sniff_encoding(body, "windows-1251") == ("cp1251", "header")
    assert alts(body, "windows-1251") == [RUSSIAN]


def test_shift_jis_declared_in_a_meta_tag_decodes_japanese():
    body = (
        f'<html><head><meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">'
        f'</head><body><img src="a.jpg" alt="{JAPANESE}"></body></html>'
    ).encode("shift_jis")
    assert sniff_encoding(body, None) == ("shift_jis", "meta")
    assert alts(body, None) == [JAPANESE]


def test_undeclared_chinese_page_is_detected():
    body = CHINESE_PAGE.encode("gb18030")
    encoding, source = sniff_encoding(body, None)
    assert source == "detected" and encoding in ("gb18030", "gbk")
    assert alts(body, None) == ["蓝色背景上的红色圆形"]


def test_header_charset_wins_over_a_conflicting_meta_tag():
    body = (
        f'<html><head><meta charset="utf-8"></head><body><img src="a.jpg" alt="{RUSSIAN}">'
        f"</body></html>"
    ).encode("koi8-r")
    assert sniff_encoding(body, "koi8-r")[1] == "header"
    assert alts(body, "koi8-r") == [RUSSIAN]


def test_byte_order_mark_wins_over_everything():
    body = "\ufeff<html><img src='a.jpg' alt='café au lait'></html>".encode("utf-8")
    assert sniff_encoding(body, "iso-8859-1") == ("utf-8", "bom")
    assert alts(body, "iso-8859-1") == ["café au lait"]


@pytest.mark.parametrize("label", ["no-such-charset", "", None])
def test_unknown_header_label_falls_through_to_meta(label):
    body = f'<meta charset="windows-1251"><img src="a.jpg" alt="{RUSSIAN}">'.encode("cp1251")
    assert sniff_encoding(body, label) == ("cp1251", "meta")
