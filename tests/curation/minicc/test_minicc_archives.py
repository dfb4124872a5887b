"""The WARC and WAT files: readable by warcio and FastWARC, correct headers and digests, HTML that
matches the truth table, and exactly the planted faults."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections import defaultdict

import pyarrow.parquet as pq
import pytest
from fastwarc.warc import ArchiveIterator as FastArchiveIterator
from selectolax.lexbor import LexborHTMLParser
from warcio.archiveiterator import ArchiveIterator

from curation.minicc.urlforms import normalise

REQUIRED_HEADERS = {
    "warcinfo": ("WARC-Record-ID", "WARC-Date", "Content-Length", "Content-Type", "WARC-Filename"),
    "request": (
        "WARC-Record-ID",
        "WARC-Date",
        "Content-Length",
        "Content-Type",
        "WARC-Target-URI",
        "WARC-Warcinfo-ID",
    ),
    "response": (
        "WARC-Record-ID",
        "WARC-Date",
        "Content-Length",
        "Content-Type",
        "WARC-Target-URI",
        "WARC-Concurrent-To",
        "WARC-Warcinfo-ID",
        "WARC-Payload-Digest",
        "WARC-Block-Digest",
        "WARC-Identified-Payload-Type",
    ),
    "metadata": (
        "WARC-Record-ID",
        "WARC-Date",
        "Content-Length",
        "Content-Type",
        "WARC-Target-URI",
        "WARC-Concurrent-To",
        "WARC-Warcinfo-ID",
    ),
}


def _sha1(data: bytes) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode()


def _paths(root, name):
    return gzip.decompress((root / name).read_bytes()).decode().split()


@pytest.fixture(scope="module")
def archive(tiny_world):
    root, world = tiny_world
    truth = pq.read_table(root / "truth.parquet").to_pylist()
    faulty_pages = {r["page_url"]: r["page_fault"] for r in truth if r["page_fault"]}
    return root, world, truth, faulty_pages


def _warcio_records(path):
    """(type, headers, http status or None, payload bytes, raw block digest ok) per record."""
    records = []
    with open(path, "rb") as stream:
        for record in ArchiveIterator(stream):
            payload = record.content_stream().read()
            status = record.http_headers.get_statuscode() if record.http_headers else None
            records.append((record.rec_type, dict(record.rec_headers.headers), status, payload))
    return records


def test_paths_lists_are_relative_and_point_at_existing_files(archive):
    root, world, _, _ = archive
    warcs, wats = _paths(root, world["warc_paths"]), _paths(root, world["wat_paths"])
    assert len(warcs) == len(wats) == world["counts"]["warc_files"] >= 2
    for path in warcs + wats:
        assert path.startswith(f"crawl-data/{world['snapshot']}/segments/")
        assert (root / path).is_file()
    assert all("/warc/" in p and p.endswith(".warc.gz") for p in warcs)
    assert all("/wat/" in p and p.endswith(".warc.wat.gz") for p in wats)


def test_every_record_is_its_own_gzip_member(archive):
    root, world, _, _ = archive
    data = (root / _paths(root, world["warc_paths"])[0]).read_bytes()
    members = data.count(b"\x1f\x8b\x08\x00\x00\x00\x00\x00")  # gzip magic + mtime 0
    pages_in_file = len(
        {
            r["page_url"]
            for r in archive[2]
            if r["warc_path"] in _paths(root, world["warc_paths"])[0]
        }
    )
    assert members >= 1 + 3 * pages_in_file


def test_warcio_reads_every_record_with_correct_headers_and_digests(archive):
    root, world, _, faulty_pages = archive
    seen_faults = set()
    for path in _paths(root, world["warc_paths"]):
        records = _warcio_records(root / path)
        assert records[0][0] == "warcinfo"
        ids = {}
        for rec_type, headers, status, payload in records:
            for name in REQUIRED_HEADERS[rec_type]:
                assert headers.get(name), f"{path}: {rec_type} lacks {name}"
            ids[headers["WARC-Record-ID"]] = rec_type
            uri = headers.get("WARC-Target-URI")
            if rec_type != "response":
                continue
            if uri in faulty_pages:
                seen_faults.add(faulty_pages[uri])
                if faulty_pages[uri] == "broken_http_headers":
                    assert status != "200"
                else:  # the truncated member: its payload cannot match the digest
                    assert _sha1(payload) != headers["WARC-Payload-Digest"]
                continue
            assert status == "200"
            assert _sha1(payload) == headers["WARC-Payload-Digest"]
            assert headers["WARC-Identified-Payload-Type"] == "text/html"
        for rec_type, headers, _, _ in records:
            if rec_type in ("response", "metadata"):
                assert headers["WARC-Concurrent-To"] in ids  # points at a record of this file
        types = [r[0] for r in records[1:]]
        complete = types[: len(types) - len(types) % 3]
        assert complete == ["request", "response", "metadata"] * (len(complete) // 3)
    assert seen_faults == {"broken_http_headers", "truncated_record"}


def test_fastwarc_reads_the_same_records_as_warcio(archive):
    root, world, _, faulty_pages = archive
    for path in _paths(root, world["warc_paths"]):
        expected = [(t, h["WARC-Record-ID"], p) for t, h, _, p in _warcio_records(root / path)]
        for record in FastArchiveIterator(str(root / path), parse_http=False):
            if record.headers.get("WARC-Target-URI") not in faulty_pages and record.headers.get(
                "WARC-Block-Digest"
            ):
                assert record.verify_block_digest(consume=True)
        got = []
        for record in FastArchiveIterator(str(root / path), parse_http=True):
            uri = record.headers.get("WARC-Target-URI")
            if record.headers.get("WARC-Type") == "response" and uri not in faulty_pages:
                assert record.http_headers.status_code == 200
                assert record.verify_payload_digest(consume=False)
            got.append(
                (
                    record.headers.get("WARC-Type"),
                    record.headers.get("WARC-Record-ID"),
                    record.reader.read(),
                )
            )
        assert got == expected  # same records, same ids, same payload bytes


def _pages(root, world):
    """page URL -> (HTTP Content-Type header, body bytes), for pages whose response is whole."""
    pages = {}
    for path in _paths(root, world["warc_paths"]):
        with open(root / path, "rb") as stream:
            for record in ArchiveIterator(stream):
                if record.rec_type == "response" and record.http_headers.get_statuscode() == "200":
                    payload = record.content_stream().read()
                    if _sha1(payload) == record.rec_headers.get_header("WARC-Payload-Digest"):
                        pages[record.rec_headers.get_header("WARC-Target-URI")] = (
                            record.http_headers.get_header("Content-Type"),
                            payload,
                        )
    return pages


def test_html_img_tags_match_the_truth_table(archive):
    root, world, truth, faulty_pages = archive
    by_page = defaultdict(list)
    for row in truth:
        by_page[row["page_url"]].append(row)
    pages = _pages(root, world)
    assert set(pages) == set(by_page) - set(faulty_pages)
    for url, (content_type, body) in pages.items():
        rows = sorted(by_page[url], key=lambda r: r["tag_index"])
        charset = rows[0]["charset"]
        html = body.decode(charset)  # decodes strictly in the page's true charset
        declared = rows[0]["charset_declared"]
        assert ("charset=" in content_type) == (declared == "http_header")
        head = html[: html.find("</head>")].lower()
        assert ("<meta charset=" in head) == (declared == "meta")
        assert ("http-equiv" in head) == (declared == "http_equiv")
        tree = LexborHTMLParser(html)
        base = tree.css_first("base")
        base_url = normalise(url, base.attributes["href"]) if base else url
        images = tree.css("img")
        assert len(images) == len(rows), url
        for node, row in zip(images, rows):
            attrs = node.attributes
            assert attrs.get("src") == row["raw_src"]
            assert attrs.get("alt") == row["alt"]
            assert attrs.get("title") == row["title"]
            if row["url_form"] == "junk":
                assert row["image_url"] is None
            elif row["url_form"].startswith("srcset"):
                widest = max(
                    (c.split() for c in attrs["srcset"].split(",")), key=lambda c: int(c[1][:-1])
                )
                assert normalise(base_url, widest[0]) == row["image_url"]
            elif row["url_form"].startswith("lazy"):
                lazy = next(v for k, v in attrs.items() if k.startswith("data-"))
                assert normalise(base_url, lazy) == row["image_url"]
            else:
                assert normalise(base_url, attrs["src"]) == row["image_url"]


def test_wat_envelopes_describe_each_warc_record_and_list_img_links(archive):
    root, world, truth, faulty_pages = archive
    raw_src = defaultdict(list)
    for row in sorted(truth, key=lambda r: (r["page_url"], r["tag_index"])):
        raw_src[row["page_url"]].append(row["raw_src"])
    html_pages = 0
    for path in _paths(root, world["wat_paths"]):
        with open(root / path, "rb") as stream:
            for record in ArchiveIterator(stream):
                if record.rec_type != "metadata":
                    continue
                envelope = json.loads(record.content_stream().read())["Envelope"]
                warc_headers = envelope["WARC-Header-Metadata"]
                assert (
                    record.rec_headers.get_header("WARC-Refers-To")
                    == warc_headers["WARC-Record-ID"]
                )
                response = envelope["Payload-Metadata"].get("HTTP-Response-Metadata")
                if warc_headers["WARC-Type"] != "response" or response is None:
                    continue
                uri = warc_headers["WARC-Target-URI"]
                assert uri not in faulty_pages
                html_pages += 1
                links = response["HTML-Metadata"]["Links"]
                srcs = [link["url"] for link in links if link["path"] == "IMG@/src"]
                assert srcs == raw_src[uri]
                assert all(link["path"].startswith(("IMG@/", "A@/")) for link in links)
    assert html_pages == world["counts"]["pages"] - len(faulty_pages)
