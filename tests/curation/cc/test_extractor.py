import gzip
import time

import pytest

from curation.cc.extractor import extract_file, infer_format
from curation.cc.text_filters import TextFilters
from curation.cc.warc_reader import UnreadableArchiveError
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

    def explode_on_first_page(markup, page_url, drops, *parser):
        if page_url.endswith("/first"):
            raise RuntimeError("parser gave up")
        return real(markup, page_url, drops, *parser)

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


def test_deeply_nested_10mb_page_is_cut_quickly_and_counted(tmp_path):
    """2M nested <div>s: lexbor's time grows with the square of the depth (minutes unbounded)."""
    image = b'<img src="/a.jpg" alt="a lighthouse on a rocky coast at dusk">'
    hostile = b"<html><body>" + image + b"<div>" * 2_000_000 + image.replace(b"/a.", b"/b.")
    assert len(hostile) > 10_000_000
    path = gallery_archive(tmp_path, [response_member("http://deep.example/", hostile)])
    stats = ShardStats()
    started = time.process_time()
    table = extract_file(path, "warc", TextFilters(), stats)
    assert time.process_time() - started < 5
    assert stats.extra["cut_pages"] == {"depth": 1}
    urls = table.column("url").to_pylist()
    assert "http://deep.example/a.jpg" in urls  # what comes before the cut is kept
    assert "http://photos.example.com/img/sunset.jpg" in urls  # and the other pages


def test_page_over_one_mib_is_cut_at_one_mib_and_counted(tmp_path):
    filler = b"<p>" + b"plain text " * 200_000  # 2.2 MB, shallow
    late_image = b'<img src="/late.jpg" alt="an image past the first MiB of the page">'
    early_image = b'<img src="/early.jpg" alt="an image at the start of the page">'
    body = b"<html><body>" + early_image + filler + late_image
    path = gallery_archive(tmp_path, [response_member("http://big.example/", body)])
    stats = ShardStats()
    urls = extract_file(path, "warc", TextFilters(), stats).column("url").to_pylist()
    assert "http://big.example/early.jpg" in urls
    assert "http://big.example/late.jpg" not in urls
    assert stats.extra["cut_pages"] == {"size": 1}


def clueweb_record(page_url: str, http_header: bytes, body: bytes) -> bytes:
    """A ClueWeb09-style WARC/0.18 response record, its HTTP header lines ending in a bare LF."""
    block = http_header + body
    header = (
        "WARC/0.18\r\nWARC-Type: response\r\n"
        f"WARC-Target-URI: {page_url}\r\nWARC-Date: 2009-01-13T18:05:10-0800\r\n"
        "WARC-TREC-ID: clueweb09-en0000-00-00000\r\n"
        "Content-Type: application/http;msgtype=response\r\n"
        f"Content-Length: {len(block)}\r\n\r\n"
    ).encode()
    return gzip.compress(header + block + b"\r\n\r\n", mtime=0)


def test_clueweb_warc_018_records_are_read_as_html_with_their_charset(tmp_path):
    alt = "港の夕焼けと帆船の写真"
    body = f'<html><body><img src="/harbour.jpg" alt="{alt}"></body></html>'.encode("euc-jp")
    header = b"HTTP/1.1 200 OK\nContent-Type: text/html; charset=EUC-JP\r\nServer: x\r\n\r\n"
    path = tmp_path / "clueweb.warc.gz"
    write_archive(str(path), [clueweb_record("http://jp.example/", header, body)])
    stats = ShardStats()
    table = extract_file(str(path), "warc", TextFilters.disabled(), stats)
    assert stats.extra["skipped_records"] == {}
    assert stats.extra["charset_sources"] == {"header": 1}
    assert table.to_pylist()[0]["url"] == "http://jp.example/harbour.jpg"
    assert table.to_pylist()[0]["text"] == alt


@pytest.mark.parametrize(
    "content",
    [b"", bytes(range(256)) * 400, gzip.compress(b"not a WARC file\n" * 1000)],
    ids=["empty", "random-bytes", "gzip-of-text"],
)
def test_file_without_one_readable_record_is_an_error(tmp_path, content):
    path = tmp_path / "bad.warc.gz"
    path.write_bytes(content)
    with pytest.raises(UnreadableArchiveError, match="no readable WARC record"):
        extract_file(str(path), "warc", TextFilters(), ShardStats())


def test_html_parser_option_reaches_the_pages_from_the_stage_cli(tmp_path, monkeypatch):
    import argparse

    import pyarrow.parquet as pq

    from curation.cc import extractor
    from curation.stages import extract
    from curation.stages.common import ConfigError

    seen = []
    real = extractor.extract_page_images

    def recording(markup, page_url, drops, parser):
        seen.append(parser)
        return real(markup, page_url, drops, parser)

    monkeypatch.setattr(extractor, "extract_page_images", recording)
    path = tmp_path / "one.warc.gz"
    page = b'<img src="x.jpg" alt="a red bicycle">'
    write_archive(str(path), [response_member("http://a.example/", page)])
    cli = argparse.ArgumentParser()
    extract.register(cli.add_subparsers(dest="command"))
    for parser in ("scan", "lexbor"):
        out = tmp_path / parser
        argv = ["extract", "--input", str(path), "--out", str(out), "--no-ray"]
        args = cli.parse_args([*argv, "--html-parser", parser])
        assert args.func(args) == 0
        assert pq.read_table(out / "00000.parquet").column("text").to_pylist() == ["a red bicycle"]
    assert seen == ["scan", "lexbor"]
    with pytest.raises(ConfigError):
        extract.ExtractConfig(inputs=(str(path),), out=str(tmp_path / "x"), html_parser="regex")
