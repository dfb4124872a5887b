import json
from collections import Counter

import pytest

from curation.cc.wat import WatRecordError, page_images_from_wat


def wat_body(links, base=None, warc_type="response", page="http://blog.example.com/2024/post"):
    head = {"Title": "post", **({"Base": base} if base else {})}
    return json.dumps(
        {
            "Envelope": {
                "WARC-Header-Metadata": {"WARC-Type": warc_type, "WARC-Target-URI": page},
                "Payload-Metadata": {
                    "HTTP-Response-Metadata": {"HTML-Metadata": {"Head": head, "Links": links}}
                },
            }
        }
    ).encode()


def test_img_links_resolve_against_the_page_and_keep_alt_and_title():
    links = [
        {"path": "IMG@/src", "url": "photos/cat.jpg", "alt": "A  cat on a sofa"},
        {"path": "A@/href", "url": "/about", "text": "About"},
        {"path": "IMG@/src", "url": "//cdn.example.net/dog.png", "title": "Dog"},
    ]
    drops: Counter = Counter()
    page = page_images_from_wat(wat_body(links), drops)
    assert page.page_url == "http://blog.example.com/2024/post"
    assert [(r.url, r.alt, r.title) for r in page.refs] == [
        ("http://blog.example.com/2024/photos/cat.jpg", "A cat on a sofa", ""),
        ("http://cdn.example.net/dog.png", "", "Dog"),
    ]
    assert not drops


def test_base_from_the_head_is_honoured():
    links = [{"path": "IMG@/src", "url": "x.jpg", "alt": "x"}]
    page = page_images_from_wat(wat_body(links, base="https://static.example.com/img/"), Counter())
    assert page.refs[0].url == "https://static.example.com/img/x.jpg"


def test_data_uris_in_links_are_dropped_with_their_reason():
    links = [{"path": "IMG@/src", "url": "data:image/png;base64,AAAA", "alt": "inline"}]
    drops: Counter = Counter()
    assert page_images_from_wat(wat_body(links), drops).refs == []
    assert drops == Counter({"url_scheme": 1})


def test_records_about_requests_are_not_pages():
    assert page_images_from_wat(wat_body([], warc_type="request"), Counter()) is None


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"Container": {}}'])
def test_malformed_records_raise_a_clear_error(body):
    with pytest.raises(WatRecordError):
        page_images_from_wat(body, Counter())
