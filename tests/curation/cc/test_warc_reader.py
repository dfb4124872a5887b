import gzip

import pytest

from curation.cc.warc_reader import RESPONSE_RECORDS, RawRecord, is_html, iter_records
from curation.cc.warc_writer import response_member, write_archive
from curation.stats import ShardStats


def page(i: int) -> bytes:
    return response_member(
        f"http://example.com/page{i}",
        f"<html><img src='img{i}.jpg' alt='picture number {i}'></html>".encode(),
    )


def read(tmp_path, members, name="a.warc.gz"):
    path = tmp_path / name
    write_archive(str(path), members)
    stats = ShardStats()
    records = list(iter_records(str(path), RESPONSE_RECORDS, stats, parse_http=True))
    return records, stats


def offsets(members):
    positions, total = [], 0
    for member in members:
        positions.append(total)
        total += len(member)
    return positions


def test_records_come_with_their_member_offsets(tmp_path):
    members = [page(i) for i in range(3)]
    records, stats = read(tmp_path, members)
    assert [r.offset for r in records] == offsets(members)
    assert [r.target_uri for r in records] == [f"http://example.com/page{i}" for i in range(3)]
    assert records[0].http_status == 200 and records[0].http_charset == "utf-8"
    assert not stats.errors


@pytest.mark.parametrize("keep_bytes", [5, 40, 120, -30])
def test_truncated_final_member_loses_only_its_own_record(tmp_path, keep_bytes):
    members = [page(i) for i in range(4)]
    members[-1] = members[-1][:keep_bytes]
    records, stats = read(tmp_path, members)
    assert [r.target_uri[-1] for r in records] == ["0", "1", "2"]
    assert sum(stats.errors.values()) <= 1


def test_truncated_final_member_is_counted_with_file_and_offset(tmp_path):
    members = [page(0), page(1)[:-40]]
    records, stats = read(tmp_path, members)
    assert len(records) == 1 and stats.errors["truncated_record"] == 1
    assert stats.error_examples[0]["where"].endswith(f"a.warc.gz@{len(members[0])}")


def test_corrupt_member_in_the_middle_is_skipped_and_reading_resumes(tmp_path):
    members = [page(i) for i in range(5)]
    corrupt = bytearray(members[2])
    corrupt[30:70] = bytes(range(40))  # damage the deflate stream, keep the gzip header
    members[2] = bytes(corrupt)
    records, stats = read(tmp_path, members)
    assert [r.target_uri[-1] for r in records] == ["0", "1", "3", "4"]
    assert [r.offset for r in records] == [offsets(members)[i] for i in (0, 1, 3, 4)]
    assert stats.errors["corrupt_member"] >= 1


def test_garbage_between_members_is_skipped(tmp_path):
    members = [page(0), b"\x00not a gzip member at all" * 10, page(1)]
    records, stats = read(tmp_path, members)
    assert [r.target_uri[-1] for r in records] == ["0", "1"]
    assert stats.errors["corrupt_member"] == 1


def test_member_that_is_not_a_warc_record_is_skipped(tmp_path):
    members = [page(0), gzip.compress(b"HELLO, this is not WARC\r\n\r\n"), page(1)]
    records, stats = read(tmp_path, members)
    assert [r.target_uri[-1] for r in records] == ["0", "1"]
    assert stats.errors["corrupt_member"] == 1


def test_broken_http_header_skips_the_record_only(tmp_path):
    broken = response_member(
        "http://example.com/broken",
        b"<img src=x.jpg alt='x y'>",
        raw_header=b"this is no status line\r\n\r\n",
    )
    records, stats = read(tmp_path, [page(0), broken, page(2)])
    assert [r.target_uri[-1] for r in records] == ["0", "2"]
    assert stats.errors["bad_http_header"] == 1
    assert "http://example.com/broken" in stats.error_examples[0]["message"]


def test_uncompressed_warc_is_read_too(tmp_path):
    members = [gzip.decompress(page(i)) for i in range(3)]
    records, stats = read(tmp_path, members, name="plain.warc")
    assert [r.offset for r in records] == offsets(members)
    assert not stats.errors


def test_html_is_recognised_by_served_or_sniffed_type(tmp_path):
    def record(served, sniffed=None):
        return RawRecord(0, "http://x/", b"", 200, served, None, sniffed)

    assert is_html(record("text/html")) and is_html(record("application/xhtml+xml"))
    assert is_html(record(None, "text/html")) and is_html(record("text/plain", "text/html"))
    assert not is_html(record("image/jpeg", "text/html")) and not is_html(record("text/css"))
