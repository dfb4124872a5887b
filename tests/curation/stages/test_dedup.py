import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cc.candidates import CANDIDATE_SCHEMA, pair_uid
from curation.fsio import PlanMismatchError
from curation.runner import stable_bucket
from curation.stages import dedup
from curation.stages.common import ConfigError, RunOptions
from curation.stages.dedup import DedupConfig

IN_PROCESS = RunOptions(use_ray=False, progress=False)


def candidate(url, text, page, warc_path, offset, source="alt", width=None):
    return {
        "uid": pair_uid(url, text),
        "url": url,
        "text": text,
        "text_source": source,
        "page_url": page,
        "warc_path": warc_path,
        "warc_offset": offset,
        "width": width,
        "height": None,
        "lang": "en",
        "source": "cc",
    }


def write_candidates(folder, files: dict[str, list[dict]]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        pq.write_table(
            pa.Table.from_pylist(rows, schema=CANDIDATE_SCHEMA), folder / f"{name}.parquet"
        )


def deduped(out) -> dict[str, dict]:
    rows = {}
    for path in sorted(out.glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            assert row["url"] not in rows, f"{row['url']} appears twice"
            rows[row["url"]] = row
    return rows


CAT = "http://img.example/cat.jpg"
DOG = "http://img.example/dog.jpg"


def test_one_row_per_url_with_texts_ranked_by_frequency_then_first_seen(tmp_path):
    a, b = "s3://cc/a.warc.gz", "s3://cc/b.warc.gz"
    write_candidates(
        tmp_path / "cand",
        {
            "00001": [  # read second, but its warc_path sorts first: its rows are seen first
                candidate(CAT, "a grey cat", "http://p/1", a, 500),
                candidate(CAT, "kitten", "http://p/2", a, 900, width=120),
            ],
            "00000": [
                candidate(CAT, "sleeping cat", "http://p/3", b, 10, source="title"),
                candidate(CAT, "sleeping cat", "http://p/4", b, 20, source="alt"),
                candidate(CAT, "kitten", "http://p/4", b, 20),
                candidate(DOG, "a dog", "http://p/3", b, 10),
            ],
        },
    )
    first, second = dedup.run(
        DedupConfig(str(tmp_path / "cand"), str(tmp_path / "out"), buckets=1), IN_PROCESS
    )
    assert first.ok and second.ok
    rows = deduped(tmp_path / "out")
    assert set(rows) == {CAT, DOG}
    cat = rows[CAT]
    # "kitten" and "sleeping cat" both appear twice; "kitten" was seen first (a.warc.gz@900).
    assert cat["texts"] == ["kitten", "sleeping cat", "a grey cat"]
    assert cat["text_sources"] == ["alt", "title", "alt"]
    assert cat["text"] == "kitten" and cat["uid"] == pair_uid(CAT, "kitten")
    assert cat["page_urls"] == ["http://p/1", "http://p/2", "http://p/3", "http://p/4"]
    assert cat["num_pages"] == 4 and cat["width"] == 120
    assert second.completed[0]["drops"] == {"duplicate_url": 4}
    assert (second.summary["candidate_rows"], second.summary["urls"]) == (6, 2)


def test_texts_and_page_urls_are_capped(tmp_path):
    rows = [candidate(CAT, f"caption number {i}", f"http://p/{i}", "w.gz", i) for i in range(12)]
    rows += [candidate(CAT, "caption number 11", "http://p/x", "w.gz", 99)]
    write_candidates(tmp_path / "cand", {"00000": rows})
    dedup.run(
        DedupConfig(str(tmp_path / "cand"), str(tmp_path / "out"), buckets=2, max_texts=3),
        IN_PROCESS,
    )
    cat = deduped(tmp_path / "out")[CAT]
    assert cat["texts"] == ["caption number 11", "caption number 0", "caption number 1"]
    assert len(cat["page_urls"]) == dedup.MAX_PAGE_URLS and cat["num_pages"] == 13


def test_urls_spread_over_buckets_come_out_once_each_on_ray(tmp_path, ray_session):
    urls = [f"http://img{i % 7}.example/{i % 40}.jpg" for i in range(300)]
    files = {
        f"{f:05d}": [
            candidate(u, f"text {i % 3}", f"http://page/{i}", f"w{f}.gz", i)
            for i, u in enumerate(urls)
            if i % 3 == f
        ]
        for f in range(3)
    }
    write_candidates(tmp_path / "cand", files)
    first, second = dedup.run(
        DedupConfig(str(tmp_path / "cand"), str(tmp_path / "out"), buckets=5),
        RunOptions(progress=False),
    )
    assert first.ok and second.ok
    rows = deduped(tmp_path / "out")
    assert set(rows) == set(urls)
    for bucket in range(5):
        table = pq.read_table(tmp_path / "out" / f"{bucket:05d}.parquet")
        assert all(stable_bucket(u, 5) == bucket for u in table.column("url").to_pylist())
    assert len({stable_bucket(u, 5) for u in urls}) > 1
    _, merged = dedup.run(
        DedupConfig(str(tmp_path / "cand"), str(tmp_path / "one"), buckets=1), IN_PROCESS
    )
    assert merged.ok and deduped(tmp_path / "one") == rows
    assert sum(r["num_pages"] for r in rows.values()) == len(urls)


def test_rerun_skips_done_shards_and_refuses_another_plan(tmp_path):
    write_candidates(tmp_path / "cand", {"00000": [candidate(CAT, "a cat", "http://p", "w", 1)]})
    out = str(tmp_path / "out")
    dedup.run(DedupConfig(str(tmp_path / "cand"), out, buckets=2), IN_PROCESS)
    first, second = dedup.run(DedupConfig(str(tmp_path / "cand"), out, buckets=2), IN_PROCESS)
    assert first.skipped == ["00000"] and sorted(second.skipped) == ["00000", "00001"]
    with pytest.raises(PlanMismatchError, match="planned from other inputs or settings"):
        dedup.run(DedupConfig(str(tmp_path / "cand"), out, buckets=3), IN_PROCESS)


def test_a_folder_without_candidates_fails_fast(tmp_path):
    with pytest.raises(ConfigError, match="no candidate files"):
        dedup.run(DedupConfig(str(tmp_path), str(tmp_path / "out")), IN_PROCESS)


def test_bad_settings_are_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="at least 1"):
        DedupConfig(str(tmp_path), str(tmp_path / "out"), buckets=0)


def test_cli_exits_2_on_bad_settings_and_0_after_both_passes(tmp_path, capsys):
    from curation.cli import main

    assert main(["dedup", "--input", str(tmp_path), "--out", str(tmp_path / "o"), "--no-ray"]) == 2
    assert "no candidate files" in capsys.readouterr().err
    write_candidates(tmp_path / "cand", {"00000": [candidate(CAT, "a cat", "http://p", "w", 1)]})
    argv = ["dedup", "--input", str(tmp_path / "cand"), "--out", str(tmp_path / "out")]
    assert main([*argv, "--no-ray", "--no-progress", "--buckets", "2"]) == 0
    printed = capsys.readouterr().out
    assert "dedup_partition: 1 shards done" in printed and "dedup: 2 shards done" in printed


def test_a_failed_partition_pass_does_not_start_the_merge(tmp_path):
    (tmp_path / "cand").mkdir()
    pq.write_table(pa.table({"url": ["http://x/1.jpg"]}), tmp_path / "cand" / "00000.parquet")
    reports = dedup.run(DedupConfig(str(tmp_path / "cand"), str(tmp_path / "out")), IN_PROCESS)
    assert len(reports) == 1 and not reports[0].ok
    assert "not started" in reports[0].describe()
