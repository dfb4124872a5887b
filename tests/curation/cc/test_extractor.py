import gzip

import pytest

from curation.cc.extractor import extract_file, infer_format
from curation.cc.text_filters import TextFilters
from curation.cc.warc_writer import response_member, wat_member, write_archive
from curation.stats import ShardStats

GALLERY = """<html lang="en"><head><title>Gallery</title></head><body>
<img src="/img/sunset.jpg" alt="Sunset over the harbour with sailing boats" width="800" height="600">
<img src="/img/logo.png" alt="Click here">
<img src="/img/IMG_4411.JPG" alt="IMG_4411.JPG">
<img src="/img/spacer.gif" alt="">
<img src="data:image/gif;base64,R0lGODlh" alt="inline pixel">
<img src="/img/bridge.jpg" title="The old stone bridge at dawn">
</body></html>"""


def gallery_archive(tmp_path, extra_members=()):
    members = [
        response_member("http://photos.example.com/gallery", GALLERY.encode()),
        response_member("http://photos.example.com/style.css", b"body{}", content_type="text/css"),
        response_member("http://photos.example.com/gone", b"", status="404 Not Found"),
        *extra_members,
    ]
    path = tmp_path / "gallery.warc.gz"
    write_archive(str(path), members)
    return str(path)


def test_default_filters_keep_captions_and_count_every_drop(tmp_path):
    stats = ShardStats()
    table = extract_file(gallery_archive(tmp_path), "warc", TextFilters(), stats)
    rows = table.to_pylist()
    assert [(r["url"], r["text"], r["text_source"]) for r in rows] == [
        (
            "http://photos.example.com/img/sunset.jpg",
            "Sunset over the harbour with sailing boats",
            "alt",
        ),
        ("http://photos.example.com/img/bridge.jpg", "The old stone bridge at dawn", "title"),
    ]
    assert (rows[0]["width"], rows[0]["height"], rows[0]["lang"]) == (800, 600, "en")
    assert dict(stats.drops) == {
        "text_boilerplate": 1,
        "text_file_name": 1,
        "no_text": 1,
        "url_scheme": 1,
    }
    assert (stats.rows_in, stats.rows_out) == (6, 2)
    assert stats.extra["records"] == 3 and stats.extra["html_pages"] == 1
    assert stats.extra["skipped_records"] == {"http_status": 1, "not_html": 1}
    assert stats.extra["images"] == 6 and stats.extra["pairs"] == 2
    assert stats.extra["mb_per_s"] > 0 and stats.bytes_in == stats.extra["file_bytes"] > 0


def test_without_text_filters_every_non_empty_text_is_kept(tmp_path):
    stats = ShardStats()
    table = extract_file(gallery_archive(tmp_path), "warc", TextFilters.disabled(), stats)
    assert table.column("text").to_pylist() == [
        "Sunset over the harbour with sailing boats",
        "Click here",
        "IMG_4411.JPG",
        "The old stone bridge at dawn",
    ]
    assert dict(stats.drops) == {"no_text": 1, "url_scheme": 1}


def test_truncated_archive_keeps_the_pairs_of_earlier_records(tmp_path):
    last = response_member("http://photos.example.com/late", GALLERY.encode())
    path = gallery_archive(tmp_path, [last[: len(last) // 2]])
    stats = ShardStats()
    table = extract_file(path, "warc", TextFilters(), stats)
    assert table.column("page_url").to_pylist() == ["http://photos.example.com/gallery"] * 2
    assert stats.errors["truncated_record"] + stats.errors["corrupt_member"] == 1


def test_unparseable_page_is_counted_and_the_next_page_still_yields(tmp_path, monkeypatch):
    from curation.cc import extractor

    real = extractor.extract_page_images

    def explode_on_first_page(markup, page_url, drops):
        if page_url.endswith("/first"):
            raise RuntimeError("parser gave up")
        return real(markup, page_url, drops)

    monkeypatch.setattr(extractor, "extract_page_images", explode_on_first_page)
    path = tmp_path / "two.warc.gz"
    write_archive(
        str(path),
        [
            response_member("http://a.example/first", GALLERY.encode()),
            response_member("http://a.example/second", GALLERY.encode()),
        ],
    )
    stats = ShardStats()
    table = extract_file(str(path), "warc", TextFilters(), stats)
    assert set(table.column("page_url").to_pylist()) == {"http://a.example/second"}
    assert stats.errors["unparseable_html"] == 1


def test_wat_and_warc_agree_on_src_only_pages(tmp_path):
    html = (
        '<html><body><img src="a/one.jpg" alt="first photo of the day">'
        '<img src="//cdn.example.org/two.jpg" alt="second photo here"></body></html>'
    )
    page = "http://site.example/blog/post"
    write_archive(str(tmp_path / "p.warc.gz"), [response_member(page, html.encode())])
    write_archive(
        str(tmp_path / "p.warc.wat.gz"),
        [
            wat_member(
                page,
                [
                    {"url": "a/one.jpg", "alt": "first photo of the day"},
                    {"url": "//cdn.example.org/two.jpg", "alt": "second photo here"},
                ],
            )
        ],
    )
    columns = ["url", "text", "page_url", "uid"]
    from_warc = extract_file(str(tmp_path / "p.warc.gz"), "warc", TextFilters(), ShardStats())
    from_wat = extract_file(str(tmp_path / "p.warc.wat.gz"), "wat", TextFilters(), ShardStats())
    assert from_warc.select(columns).to_pylist() == from_wat.select(columns).to_pylist()


def test_malformed_wat_record_is_counted(tmp_path):
    bad = gzip.compress(
        b"WARC/1.0\r\nWARC-Type: metadata\r\nWARC-Target-URI: http://x.example/\r\n"
        b"Content-Length: 9\r\n\r\n{broken!}\r\n\r\n"
    )
    good = wat_member("http://x.example/ok", [{"url": "/a.jpg", "alt": "a fine picture"}])
    path = tmp_path / "w.warc.wat.gz"
    write_archive(str(path), [bad, good])
    stats = ShardStats()
    table = extract_file(str(path), "wat", TextFilters(), stats)
    assert table.column("url").to_pylist() == ["http://x.example/a.jpg"]
    assert stats.errors["bad_wat_record"] == 1


@pytest.mark.parametrize(
    "url, expected",
    [
        ("s3://commoncrawl/crawl-data/CC-MAIN-2024-10/segments/1/wat/CC-MAIN-x.warc.wat.gz", "wat"),
        ("/data/CC-MAIN-x.warc.gz", "warc"),
    ],
)
def test_format_is_inferred_from_the_file_name(url, expected):
    assert infer_format(url) == expected
