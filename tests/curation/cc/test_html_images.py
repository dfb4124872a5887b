from collections import Counter

from curation.cc.html_images import extract_page_images

PAGE = "http://shop.example.com/catalog/item.html"


def images(html: str, page_url: str = PAGE):
    drops: Counter = Counter()
    page = extract_page_images(html, page_url, drops)
    return page, drops


def test_lazy_loading_attribute_beats_a_placeholder_src():
    html = (
        '<img src="data:image/gif;base64,R0lGOD" data-src="/real/one.jpg" alt="one">'
        '<img src="/spacer.gif" data-lazy-src="two.jpg" alt="two">'
        '<img data-original="//cdn.example.com/three.jpg" alt="three">'
    )
    page, drops = images(html)
    assert [ref.url for ref in page.refs] == [
        "http://shop.example.com/real/one.jpg",
        "http://shop.example.com/catalog/two.jpg",
        "http://cdn.example.com/three.jpg",
    ]
    assert not drops


def test_largest_srcset_candidate_is_the_image_url():
    html = (
        '<img src="s.jpg" srcset="s.jpg 300w, xl.jpg 2000w, m.jpg 800w" alt="a">'
        '<img src="p.jpg" data-srcset="p1.jpg 1x, p2.jpg 2x" alt="b">'
    )
    page, _ = images(html)
    assert [ref.url.rsplit("/", 1)[1] for ref in page.refs] == ["xl.jpg", "p2.jpg"]


def test_base_href_is_used_for_relative_urls():
    html = '<head><base href="https://static.example.org/assets/"></head><img src="x.png" alt="x">'
    page, _ = images(html)
    assert page.refs[0].url == "https://static.example.org/assets/x.png"


def test_texts_are_entity_decoded_and_whitespace_collapsed():
    html = '<img src="a.jpg" alt="  Fish &amp; chips\n\t on a  plate " title="Dinner &lt;3">'
    page, _ = images(html)
    assert (page.refs[0].alt, page.refs[0].title) == ("Fish & chips on a plate", "Dinner <3")


def test_dimensions_come_from_the_attributes_when_they_are_pixels():
    html = '<img src="a.jpg" width="640" height="480px"><img src="b.jpg" width="50%" height="x">'
    page, _ = images(html)
    assert [(r.width, r.height) for r in page.refs] == [(640, 480), (None, None)]


def test_unfetchable_images_are_counted_by_reason():
    html = (
        '<img src="data:image/png;base64,iVBOR" alt="inline">'
        '<img src="javascript:void(0)" alt="js"><img alt="no url at all"><img src="  ">'
    )
    page, drops = images(html)
    assert page.refs == []
    assert drops == Counter({"url_scheme": 2, "img_no_url": 1, "url_empty": 1})


def test_declared_page_language_is_its_primary_subtag():
    page, _ = images('<html lang="pt-BR"><img src="a.jpg" alt="gato"></html>')
    assert page.lang == "pt"
    page, _ = images('<html><img src="a.jpg"></html>')
    assert page.lang is None


def test_broken_markup_still_yields_the_images_it_contains():
    html = (
        '<table><tr><td><p><b><img src="a.jpg" alt="first"></i></table></div></span>'
        "<<<>\x00<img src=b.jpg alt=second<p>"
    )
    page, _ = images(html)
    assert [ref.url.rsplit("/", 1)[1] for ref in page.refs] == ["a.jpg", "b.jpg"]
    assert page.refs[1].alt == "second<p"


def test_pages_without_img_tags_skip_parsing_but_image_tags_count():
    page, _ = images("<html><body><p>no pictures here, only <b>text</b></p></body></html>")
    assert page.refs == []
    page, _ = images('<html><body><IMAGE src="legacy.jpg" alt="old markup"></body></html>')
    assert [ref.alt for ref in page.refs] == ["old markup"]


def test_non_ascii_digits_are_not_dimensions():
    page, _ = images('<img src="a.jpg" width="²³" height="١٢">')
    assert (page.refs[0].width, page.refs[0].height) == (None, None)
