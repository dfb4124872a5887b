from itertools import product
from urllib.parse import urljoin

import pytest

from curation.cc.urls import (
    BaseUrl,
    UrlRejected,
    largest_srcset_candidate,
    normalize,
    rebuild_normalized,
    resolve,
)

PAGE = "https://www.example.com/articles/2024/post.html?id=7"


@pytest.mark.parametrize(
    "reference, expected",
    [
        ("photo.jpg", "https://www.example.com/articles/2024/photo.jpg"),
        ("../img/a.png", "https://www.example.com/articles/img/a.png"),
        ("/static/b.webp", "https://www.example.com/static/b.webp"),
        ("//cdn.example.net/c.jpg", "https://cdn.example.net/c.jpg"),
        ("?size=large", "https://www.example.com/articles/2024/post.html?size=large"),
        ("  \n photo.jpg\t ", "https://www.example.com/articles/2024/photo.jpg"),
        ("http://other.org/x.jpg", "http://other.org/x.jpg"),
    ],
)
def test_relative_and_protocol_relative_urls_resolve_against_the_page(reference, expected):
    assert resolve(reference, PAGE) == expected


@pytest.mark.parametrize(
    "url, expected",
    [
        ("HTTP://WWW.Example.COM/Path/IMG.JPG", "http://www.example.com/Path/IMG.JPG"),
        ("http://example.com:80/a.jpg", "http://example.com/a.jpg"),
        ("https://example.com:443/a.jpg", "https://example.com/a.jpg"),
        ("https://example.com:8443/a.jpg", "https://example.com:8443/a.jpg"),
        ("http://example.com/a.jpg#section-2", "http://example.com/a.jpg"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com/a/./b/../c.jpg", "http://example.com/a/c.jpg"),
        ("http://bücher.example/straße.jpg", "http://xn--bcher-kva.example/stra%C3%9Fe.jpg"),
        ("http://example.com/my photo.jpg?q=a b", "http://example.com/my%20photo.jpg?q=a%20b"),
        ("http://example.com/already%20encoded.jpg", "http://example.com/already%20encoded.jpg"),
        ("http://example.com./a.jpg", "http://example.com/a.jpg"),
    ],
)
def test_normalisation_makes_one_spelling_per_resource(url, expected):
    assert normalize(url) == expected


@pytest.mark.parametrize(
    "reference, reason",
    [
        ("data:image/gif;base64,R0lGODlhAQABAAAAACw=", "url_scheme"),
        ("javascript:void(0)", "url_scheme"),
        ("JavaScript:alert(1)", "url_scheme"),
        ("mailto:someone@example.com", "url_scheme"),
        ("ftp://example.com/a.jpg", "url_scheme"),
        ("   ", "url_empty"),
        ("http://[::1/a.jpg", "url_invalid"),
        ("http:///a.jpg", "url_invalid"),
    ],
)
def test_unfetchable_urls_are_rejected_with_a_reason(reference, reason):
    with pytest.raises(UrlRejected) as rejected:
        resolve(reference, PAGE)
    assert rejected.value.reason == reason


def test_resolution_against_a_base_href_that_is_itself_relative():
    base = resolve("/media/", PAGE)
    assert resolve("x.jpg", base) == "https://www.example.com/media/x.jpg"


@pytest.mark.parametrize(
    "srcset, expected",
    [
        ("small.jpg 320w, medium.jpg 640w, large.jpg 1280w", "large.jpg"),
        ("large.jpg 1280w, small.jpg 320w", "large.jpg"),
        ("a.jpg, b.jpg 2x, c.jpg 1.5x", "b.jpg"),
        (
            "https://cdn.example/img,w_640/pic.jpg 640w, https://cdn.example/img,w_1600/pic.jpg 1600w",
            "https://cdn.example/img,w_1600/pic.jpg",
        ),
        ("only.jpg", "only.jpg"),
        ("  a.jpg 100w ,\n b.jpg 900w  ", "b.jpg"),
        ("", None),
        (" , , ", None),
    ],
)
def test_srcset_yields_its_largest_candidate(srcset, expected):
    assert largest_srcset_candidate(srcset) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/a/b.jpg",
        "https://cdn.example.com/x.jpg?w=640&h=480",
        "http://example.com/a,b;c=d/e'f(g)*h~i.jpg",
        "http://example.com/%7Euser/x.png",
        "https://a-b.example.co.uk/img/2024/01/photo_01.webp?v=1.2",
        "http://example.com/",
    ],
)
def test_fast_path_agrees_with_the_full_normalisation(url):
    assert normalize(url) == rebuild_normalized(url) == url


@pytest.mark.parametrize(
    "base",
    [
        "http://example.com/dir/page.html?x=1#top",
        "https://Example.COM:8443/a/b/",
        "http://example.com",
        "http://example.com/a/b/c/d.html",
        "https://example.com/dir/../other/page",
    ],
)
@pytest.mark.parametrize(
    "reference",
    [
        "x.jpg",
        "./x.jpg",
        "../x.jpg",
        "../../../../x.jpg",
        "a/./b/../x.jpg",
        "/root/x.jpg",
        "/a/../x.jpg",
        "//cdn.example.net/x.jpg",
        "?q=1",
        "#frag",
        "x.jpg?w=1#f",
        "HTTPS://Other.example/X.jpg",
        "http://other.example/a/./b.jpg",
        ".hidden/x.jpg",
        "..x.jpg",
        "%7Euser/x.jpg",
        "dir/my photo.jpg",
    ],
)
def test_page_base_shortcuts_match_rfc3986_resolution(base, reference):
    assert BaseUrl(base).resolve(reference) == normalize(urljoin(base, reference))


def test_fast_paths_give_what_the_full_rebuild_and_urljoin_give():
    def outcome(function, *args):
        try:
            return function(*args)
        except UrlRejected as rejected:
            return rejected.reason

    ports = ("", ":80", ":443", ":8080", ":0", ":080", ":65535", ":65536", ":")
    for scheme, port, path in product(("http", "https"), ports, ("/", "/a/./b", "/a?x=1")):
        url = f"{scheme}://127.0.0.1{port}{path}"
        assert outcome(normalize, url) == outcome(rebuild_normalized, url)
    bases = ("http://a.example/b/c/d.html", "http://a.example", "http://a.example/b//c/d.html")
    references = ("./a.jpg", "../../../a.jpg", "..//a.jpg", ".", "../", "./a.jpg?u=../x#f")
    for base, reference in product(bases, references):
        joined = BaseUrl(base)
        assert outcome(joined.resolve, reference) == outcome(normalize, joined._join(reference))
    assert normalize("http://127.0.0.1:8080/a.jpg") == "http://127.0.0.1:8080/a.jpg"
    assert normalize("https://a.example:443/a.jpg") == "https://a.example/a.jpg"


def test_the_split_srcset_parser_agrees_with_the_spec_parser_where_it_answers():
    from curation.cc.urls import _simple_srcset_candidates, _srcset_candidates

    pieces = ("a.jpg", ",", " ", "1w", "2x", "\t", ", ", "b,c.jpg", "x")
    answered = 0
    for srcset in ("".join(p) for p in product(pieces, repeat=4)):
        simple = _simple_srcset_candidates(srcset)
        if simple is not None:
            answered += 1
            assert simple == _srcset_candidates(srcset), srcset
    assert answered > 1000
    assert _simple_srcset_candidates("a,b.jpg 2x, c.jpg 1x") is None  # one URL with a comma
    assert largest_srcset_candidate("s.jpg 300w, xl.jpg 2000w, m.jpg 800w") == "xl.jpg"
