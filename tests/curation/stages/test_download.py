"""The download stage end to end, against planted webs on 127.0.0.1 (allowed) and 127.0.0.2 (not)."""

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1] / "download"))
from planted_web import PlantedWeb, Route
from tests_support import mini_web_download_config

from curation import fsio
from curation.download.fetcher import FetchConfig
from curation.download.http_exchange import Timeouts
from curation.download.imaging import ImageOptions
from curation.download.plan import ShardSource
from curation.stages import download
from curation.stages.common import RunOptions
from curation.stages.download import DownloadConfig

QUIET = RunOptions(progress=False)
QUIET_LOCAL = RunOptions(use_ray=False, progress=False)

REPO = Path(__file__).resolve().parents[3]


def jpeg(width: int, height: int, shade: int, camera: str | None = None) -> bytes:
    out = io.BytesIO()
    exif = Image.Exif()
    if camera:
        exif[0x010F] = camera  # EXIF "Make"
    image = Image.new("RGB", (width, height), (shade, 255 - shade, 90))
    image.save(out, format="JPEG", quality=90, exif=exif)
    return out.getvalue()


def uid_of(url: str, text: str) -> str:
    return hashlib.blake2b(f"{url}\t{text}".encode(), digest_size=16).hexdigest()


def write_candidates(path: Path, urls: list[str]) -> Path:
    texts = [f"a picture number {i}" for i in range(len(urls))]
    table = pa.table(
        {
            "uid": [uid_of(u, t) for u, t in zip(urls, texts)],
            "url": urls,
            "text": texts,
            "texts": [[t] for t in texts],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def fast_config(
    pool: Path, inputs: list[Path] = (), *, samples_per_shard: int = 10_000, **fetch_overrides
) -> DownloadConfig:
    fetch = {
        "allow_networks": ("127.0.0.1/32",),
        "retries": 1,
        "backoff_base_s": 0.05,
        "timeouts": Timeouts(connect_s=1.0, read_s=1.0, total_s=3.0),
    }
    fetch.update(fetch_overrides)
    return DownloadConfig(
        out=str(pool),
        inputs=tuple(str(path) for path in inputs),
        fetch=FetchConfig(**fetch),
        image=ImageOptions(64, "center_crop"),
        threads=8,
        samples_per_shard=samples_per_shard,
    )


def plant_faults(web: PlantedWeb, internal: PlantedWeb) -> dict[str, str]:
    """One URL per behaviour; returns reason -> URL (the good ones under 'success-N')."""
    web.plant(
        "/robots.txt", Route(b"User-agent: *\nDisallow: /private/\n", content_type="text/plain")
    )
    image = jpeg(120, 80, 10)
    urls = {
        f"success-{i}": web.plant(
            f"/img/{i}.jpg", Route(jpeg(100 + i, 90, 20 * i, camera="Planted" if i == 0 else None))
        )
        for i in range(6)
    }
    urls["http_404"] = web.url("/img/missing.jpg")
    urls["http_500"] = web.plant("/img/error.jpg", Route(b"boom", status=500))
    urls["forbidden_address"] = internal.plant("/secret.jpg", Route(image))
    urls["robots_disallowed"] = web.plant("/private/a.jpg", Route(image))
    urls["x_robots_tag"] = web.plant(
        "/img/optout.jpg", Route(image, headers={"X-Robots-Tag": "noimageai"})
    )
    urls["truncated"] = web.plant("/img/cut.jpg", Route(image, truncate_at=100))
    urls["not_an_image"] = web.plant(
        "/img/page.jpg", Route(b"<html>login</html>", content_type="image/jpeg")
    )
    urls["corrupt_image"] = web.plant(
        "/img/garbage.jpg", Route(b"\xff\xd8\xff\xe0" + b"\x07" * 300)
    )
    urls["redirect_loop"] = web.plant("/img/loop", Route(redirect_to="/img/loop2"))
    web.plant("/img/loop2", Route(redirect_to="/img/loop"))
    web.plant("/img/to-internal", Route(redirect_to=urls["forbidden_address"]))
    urls["forbidden_address-after-redirect"] = web.url("/img/to-internal")
    urls["timeout"] = web.plant("/img/slow.jpg", Route(image, delay_headers_s=2.5))
    return urls


def read_pool(pool: Path) -> tuple[list[dict], dict[str, bytes]]:
    rows, members = [], {}
    for sidecar in sorted(pool.glob("*.parquet")):
        rows.extend(pq.read_table(sidecar).to_pylist())
        with tarfile.open(sidecar.with_suffix(".tar")) as tar:
            for member in tar.getmembers():
                members[member.name] = tar.extractfile(member).read()
    return rows, members


def test_every_fault_gets_its_own_reason_and_nothing_forbidden_is_requested(tmp_path, ray_session):
    with PlantedWeb("127.0.0.1") as web, PlantedWeb("127.0.0.2") as internal:
        urls = plant_faults(web, internal)
        candidates = write_candidates(tmp_path / "dedup" / "00000.parquet", list(urls.values()))
        pool = tmp_path / "pool"
        reports = download.run(fast_config(pool, [candidates.parent], samples_per_shard=8), QUIET)
        assert all(report.ok for report in reports)
        assert internal.requests == []
        assert web.hits("/private/a.jpg") == 0 and web.hits("/robots.txt") <= 2

    rows, members = read_pool(pool)
    by_url = {row["url"]: row for row in rows}
    assert len(rows) == len(urls)
    for name, url in urls.items():
        expected = "success" if name.startswith("success") else name.split("-after")[0]
        assert (by_url[url]["error_message"] or "success") == expected, name
    statuses = {
        by_url[urls[name]]["status"]
        for name in ("forbidden_address", "robots_disallowed", "x_robots_tag")
    }
    # img2dataset's three statuses only: what we declined to fetch failed to download.
    assert statuses == {"failed_to_download"}
    assert {row["status"] for row in rows} == {"success", "failed_to_download", "failed_to_resize"}
    assert by_url[urls["corrupt_image"]]["status"] == "failed_to_resize"
    assert by_url[urls["http_404"]]["status"] == "failed_to_download"

    successes = [row for row in rows if row["status"] == "success"]
    assert len(successes) == 6
    for row in successes:
        image_bytes = members[f"{row['key']}.jpg"]
        assert hashlib.sha256(image_bytes).hexdigest() == row["sha256"]
        assert Image.open(io.BytesIO(image_bytes)).size == (64, 64) == (row["width"], row["height"])
        assert members[f"{row['key']}.txt"].decode() == row["text"]
        metadata = json.loads(members[f"{row['key']}.json"])
        assert metadata["uid"] == row["uid"]
        assert row["caption"] == metadata["caption"] == row["text"]
        assert json.loads(metadata["exif"]) == json.loads(row["exif"])
    assert len(members) == 3 * len(successes)
    assert json.loads(by_url[urls["success-0"]]["exif"])["Image Make"] == "Planted"
    assert by_url[urls["http_404"]]["exif"] is None

    records = [
        fsio.read_json(str(p)) for p in sorted((pool / "_stats" / "download").glob("*.json"))
    ]
    status_dict: dict[str, int] = {}
    for record in records:
        extra = record["extra"]
        assert (
            extra["count"]
            == extra["successes"] + extra["failed_to_download"] + extra["failed_to_resize"]
        )
        for reason, count in extra["status_dict"].items():
            status_dict[reason] = status_dict.get(reason, 0) + count
    expected_reasons = {name.split("-after")[0] for name in urls if not name.startswith("success")}
    assert expected_reasons <= set(status_dict)
    assert status_dict["success"] == 6 and status_dict["forbidden_address"] == 2
    # The plan partitions by host: 127.0.0.2 in one shard; 127.0.0.1's 16 URLs, more than the 8
    # samples per shard, in k = 2 sub-partitions, each a shard of its own.
    shards_of_host = [host for r in records for host in r["extra"]["hosts"]]
    assert shards_of_host.count("127.0.0.1") == 2 and shards_of_host.count("127.0.0.2") == 1
    assert sum(r["extra"]["hosts"].get("127.0.0.1", {}).get("successes", 0) for r in records) == 6
    assert sum(r["extra"]["refused"] for r in records) == 4


def img2dataset_stats_fields(tmp_path: Path) -> list[str]:
    """The fields img2dataset itself writes into {shard}_stats.json."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from img2dataset.logger import CappedCounter, write_stats

    tmp_path.mkdir()
    write_stats(str(tmp_path), 0, 1, 1, 0, 0, 0.0, 1.0, CappedCounter(), 5)
    return list(json.loads((tmp_path / "00000_stats.json").read_text()))


def test_each_pool_shard_has_img2dataset_stats_that_add_up(tmp_path, ray_session):
    with PlantedWeb("127.0.0.1") as web:
        urls = [web.plant(f"/g{i}.jpg", Route(jpeg(90, 90, 30 * i))) for i in range(3)]
        urls += [web.url("/gone.jpg"), web.plant("/bad.jpg", Route(b"\xff\xd8\xff" + b"0" * 99))]
        candidates = write_candidates(tmp_path / "in.parquet", urls)
        pool = tmp_path / "pool"
        download.run(fast_config(pool, [candidates], samples_per_shard=3), QUIET)
    rows, _ = read_pool(pool)
    stats_files = sorted(pool.glob("*_stats.json"))
    assert [p.name for p in stats_files] == ["00000_stats.json", "00001_stats.json"]
    fields = img2dataset_stats_fields(tmp_path / "reference")
    totals: dict[str, int] = {}
    for path in stats_files:
        stats = json.loads(path.read_text())
        assert list(stats) == fields
        assert stats["count"] == (
            stats["successes"] + stats["failed_to_download"] + stats["failed_to_resize"]
        )
        assert stats["end_time"] >= stats["start_time"] and stats["duration"] >= 0
        for key in ("count", "successes", "failed_to_download", "failed_to_resize"):
            totals[key] = totals.get(key, 0) + stats[key]
    assert totals == {
        "count": len(rows),
        "successes": 3,
        "failed_to_download": 1,
        "failed_to_resize": 1,
    }


def test_retry_failed_recovers_transient_failures_and_rewrites_only_those(tmp_path):
    with PlantedWeb("127.0.0.1") as web:
        good = [web.plant(f"/g{i}.jpg", Route(jpeg(90, 90, 30 * i))) for i in range(3)]
        flaky = web.plant("/flaky.jpg", Route(jpeg(90, 90, 200), fail_first=2, fail_status=503))
        gone = web.url("/gone.jpg")
        candidates = write_candidates(tmp_path / "in.parquet", [*good, flaky, gone])
        pool = tmp_path / "pool"
        download.run(fast_config(pool, [candidates], samples_per_shard=10, retries=1), QUIET_LOCAL)
        before_rows, before_members = read_pool(pool)
        assert {r["url"]: r["error_message"] for r in before_rows}[flaky] == "http_503"

        config = replace(fast_config(pool, retries=1), retry_failed=True)
        reports = download.run(config, QUIET_LOCAL)
        assert [len(report.completed) for report in reports] == [0, 0, 0, 1]
        assert web.hits("/gone.jpg") == 1  # a 404 is permanent: not retried
        assert web.hits("/g0.jpg") == 1

    after_rows, after_members = read_pool(pool)
    after = {r["url"]: r for r in after_rows}
    assert after[flaky]["status"] == "success" and after[gone]["error_message"] == "http_404"
    assert {k: v for k, v in after_members.items() if k in before_members} == before_members
    assert len(after_members) == len(before_members) + 3
    marker = fsio.read_json(str(pool / "_stats" / "download" / "00000.json"))
    assert marker["extra"]["successes"] == 4 and marker["extra"]["recovered_rows"] == 1


def run_cli(candidates: Path, pool: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "curation",
        "download",
        "--input",
        str(candidates),
        "--out",
        str(pool),
        "--allow-network",
        "127.0.0.1/32",
        "--image-size",
        "48",
        "--samples-per-shard",
        "4",
        "--threads",
        "2",
        "--no-ray",
        *extra,
    ]
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def pool_files(pool: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in sorted(pool.iterdir()) if p.suffix in (".tar", ".parquet")
    }


@pytest.mark.slow
def test_killed_download_rerun_gives_an_identical_pool(tmp_path):
    with PlantedWeb("127.0.0.1") as web:
        urls = [
            web.plant(f"/k{i}.jpg", Route(jpeg(60 + i, 50, 7 * i), delay_headers_s=0.15))
            for i in range(20)
        ]
        urls.append(web.url("/absent.jpg"))
        candidates = write_candidates(tmp_path / "in.parquet", urls)

        reference = tmp_path / "reference"
        assert run_cli(candidates, reference).wait(timeout=120) == 0

        pool = tmp_path / "pool"
        process = run_cli(candidates, pool)
        markers = pool / "_stats" / "download"
        deadline = time.monotonic() + 60
        while (
            not (markers.is_dir() and any(markers.glob("*.json"))) and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        finished_before_kill = len(list(markers.glob("*.json")))
        assert 1 <= finished_before_kill < 6

        rerun = run_cli(candidates, pool)
        output = rerun.communicate(timeout=120)[0].decode()
        assert rerun.returncode == 0, output
        assert f"{finished_before_kill} already done" in output

    assert pool_files(pool) == pool_files(reference)
    assert len(pool_files(pool)) == 12
    assert not [p for p in pool.rglob("*") if fsio.TMP_MARK in p.name]
    rows, members = read_pool(pool)
    assert len({row["uid"] for row in rows}) == len(urls) == len(rows)
    assert len(members) == 3 * 20


# What a careful downloader concludes for each fault the mini Common Crawl plants (None = clean).
MINICC_EXPECTED_REASON = {
    None: "success",
    "retry_503": "success",
    "retry_429": "success",
    "redirect_chain": "success",
    "not_found": "http_404",
    "server_error": "http_500",
    "slow": "timeout",
    "truncated": "truncated",
    "not_image": "not_an_image",
    "corrupt_image": "corrupt_image",
    "decompression_bomb": "decompression_bomb",
    "redirect_loop": "redirect_loop",
    "redirect_to_forbidden": "forbidden_address",
    "forbidden_address": "forbidden_address",
    "x_robots_noai": "x_robots_tag",
    "x_robots_noimageai": "x_robots_tag",
    "robots_disallowed": "robots_disallowed",
    "robots_disallowed_agent": "robots_disallowed",
}


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_mini_common_crawl_faults_surface_by_reason_and_no_forbidden_request(tmp_path, ray_session):
    from curation.cc.text_filters import TextFilters
    from curation.minicc.build import build_world
    from curation.minicc.faults import FAULT_KINDS
    from curation.minicc.server import serve_world
    from curation.stages import dedup, extract
    from curation.stages.common import RunOptions

    world_dir = tmp_path / "world"
    world = build_world(world_dir, seed=0, scale_name="tiny", port=free_port(), processes=2)
    warcs = sorted(str(p) for p in world_dir.glob("crawl-data/*/segments/*/warc/*.warc.gz"))
    # Caption filters off: some fault URLs carry only junk alt text, and the point is to fetch them all.
    [extracted] = extract.run(
        extract.ExtractConfig(
            tuple(warcs), str(tmp_path / "candidates"), filters=TextFilters.disabled()
        ),
        RunOptions(use_ray=False, progress=False),
    )
    assert extracted.ok
    assert all(
        r.ok
        for r in dedup.run(
            dedup.DedupConfig(str(tmp_path / "candidates"), str(tmp_path / "dedup"), buckets=2),
            RunOptions(use_ray=False, progress=False),
        )
    )
    pool = tmp_path / "pool"
    config = mini_web_download_config(world, str(tmp_path / "dedup"), str(pool), image_size=128)
    with serve_world(world_dir) as web:
        reports = download.run(config, QUIET)
        assert all(report.ok for report in reports)
        log_path = web.log_path
    requests = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert requests, "the server logged nothing: the download did not reach it"
    assert not [r for r in requests if r["host"] in world["forbidden_addresses"]]
    disallowed = (world["robots"]["disallowed_for_all"], world["robots"]["disallowed_for_agent"])
    assert not [r for r in requests if r["path"].startswith(disallowed)]

    fault_of = dict(
        zip(
            *pq.read_table(world_dir / "truth_images.parquet", columns=["url", "fault"])
            .to_pydict()
            .values()
        )
    )
    rows, _ = read_pool(pool)
    seen_faults = set()
    for row in rows:
        if row["url"] in fault_of:
            fault = fault_of[row["url"]]
            seen_faults.add(fault)
            assert (row["error_message"] or "success") == MINICC_EXPECTED_REASON[fault], (
                fault,
                row["url"],
            )
    assert set(FAULT_KINDS) <= seen_faults  # every planted kind reached the downloader
    records = [fsio.read_json(str(p)) for p in (pool / "_stats" / "download").glob("*.json")]
    recovered = {reason for r in records for reason in r["extra"]["recovered_after_retry"]}
    assert {"http_503", "http_429"} <= recovered
    assert sum(r["extra"]["redirected_successes"] for r in records) >= 1
    assert all(
        set(r["extra"]["status_dict"]) <= set(MINICC_EXPECTED_REASON.values()) for r in records
    )


def test_an_unreadable_input_file_is_reported_and_the_rest_is_downloaded(tmp_path):
    with PlantedWeb("127.0.0.1") as web:
        urls = [web.plant(f"/ok{i}.jpg", Route(jpeg(70, 60, 9 * i))) for i in range(3)]
        good = write_candidates(tmp_path / "dedup" / "00000.parquet", urls)
        broken = write_candidates(tmp_path / "dedup" / "00001.parquet", [web.url("/never.jpg")])
        broken.write_bytes(broken.read_bytes()[:-8])  # a broken Parquet footer
        pool = tmp_path / "pool"
        reports = download.run(fast_config(pool, [good.parent]), QUIET_LOCAL)
        assert web.hits("/never.jpg") == 0

    partition = reports[0]
    assert [failure["inputs"] for failure in partition.failed] == [[str(broken)]]
    record = fsio.read_json(str(pool / "_errors" / "download_partition" / "00001.json"))
    assert record["inputs"] == [str(broken)] and "cannot read as Parquet" in record["message"]
    rows, _ = read_pool(pool)
    assert sorted(row["url"] for row in rows) == sorted(urls)
    assert all(row["status"] == "success" for row in rows)
    assert all(report.ok for report in reports[1:])


def test_extracts_lang_column_reaches_the_pool_sidecars_and_json(tmp_path):
    """langmix reads the pool's `lang`: download carries it from the candidates (null where an
    input file has no such column, as an older candidate table)."""
    with PlantedWeb("127.0.0.1") as web:
        urls = [web.plant(f"/l{i}.jpg", Route(jpeg(70, 60, 20 * i))) for i in range(4)]
        with_lang = write_candidates(tmp_path / "in" / "00000.parquet", urls[:3])
        table = pq.read_table(with_lang)
        langs = ["de", None, "ja"]
        pq.write_table(table.append_column("lang", pa.array(langs, pa.string())), with_lang)
        without = write_candidates(tmp_path / "in" / "00001.parquet", urls[3:])
        pool = tmp_path / "pool"
        download.run(fast_config(pool, [with_lang, without], samples_per_shard=2), QUIET_LOCAL)
    rows, members = read_pool(pool)
    expected = dict(zip(urls, [*langs, None]))
    assert {row["url"]: row["lang"] for row in rows} == expected
    assert all(row["status"] == "success" for row in rows)
    for row in rows:
        assert json.loads(members[f"{row['key']}.json"])["lang"] == expected[row["url"]]


def test_robots_txt_opt_outs_are_obeyed_and_everything_allowed_is_fetched(tmp_path, ray_session):
    image = jpeg(50, 50, 100)
    with PlantedWeb("127.0.0.1") as images_only, PlantedWeb("127.0.0.1") as no_jpeg:
        images_only.plant(
            "/robots.txt",
            Route(b"User-agent: *\nDisallow: /\nAllow: /images/\n", content_type="text/plain"),
        )
        no_jpeg.plant(
            "/robots.txt", Route(b"User-agent: *\nDisallow: /*.jpg$\n", content_type="text/plain")
        )
        allowed = {
            images_only: ["/images/a.jpg", "/images/deep/b.jpg"],
            no_jpeg: ["/a.png", "/b.jpeg", "/c.jpg.png"],
        }
        refused = {
            images_only: ["/a.jpg", "/imagesX/c.jpg", "/other/images/d.jpg"],
            no_jpeg: ["/a.jpg", "/img/b.jpg"],
        }
        urls = []
        for web in (images_only, no_jpeg):
            urls += [web.plant(path, Route(image)) for path in allowed[web] + refused[web]]
        candidates = write_candidates(tmp_path / "dedup" / "00000.parquet", urls)
        pool = tmp_path / "pool"
        assert all(report.ok for report in download.run(fast_config(pool, [candidates]), QUIET))
        for web in (images_only, no_jpeg):
            # The server's log: every allowed path requested once, no refused path ever.
            assert sorted(p for p in web.requests if p != "/robots.txt") == sorted(allowed[web])
            assert web.hits("/robots.txt") == 1

    rows, _ = read_pool(pool)
    verdicts = {row["url"]: row["error_message"] or "success" for row in rows}
    for web in (images_only, no_jpeg):
        assert {verdicts[web.url(p)] for p in allowed[web]} == {"success"}
        assert {verdicts[web.url(p)] for p in refused[web]} == {"robots_disallowed"}


def test_crawl_delay_spaces_the_requests_to_a_host(tmp_path):
    with PlantedWeb("127.0.0.1") as web:
        web.plant(
            "/robots.txt", Route(b"User-agent: *\nCrawl-delay: 0.4\n", content_type="text/plain")
        )
        urls = [web.plant(f"/c{i}.jpg", Route(jpeg(40, 40, 20 * i))) for i in range(5)]
        candidates = write_candidates(tmp_path / "in.parquet", urls)
        download.run(fast_config(tmp_path / "pool", [candidates]), QUIET_LOCAL)
        starts = [t for path, t in zip(web.requests, web.arrivals) if path != "/robots.txt"]
    assert len(starts) == 5
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
    assert min(gaps) >= 0.3, gaps  # 0.4 s apart when sent; arrival times jitter on a busy host


def test_a_shard_runs_no_more_threads_than_its_hosts_have_connection_slots(tmp_path):
    with PlantedWeb("127.0.0.1") as web:
        urls = [web.plant(f"/t{i}.jpg", Route(jpeg(40, 40, 10 * i))) for i in range(12)]
        candidates = write_candidates(tmp_path / "in.parquet", urls)
        config = replace(
            fast_config(tmp_path / "pool", [candidates], per_host_connections=3), threads=8
        )
        download.run(config, QUIET_LOCAL)
    (marker,) = (tmp_path / "pool" / "_stats" / "download").glob("*.json")
    extra = fsio.read_json(str(marker))["extra"]
    assert extra["successes"] == 12
    assert extra["threads"] == 3  # one host with 3 slots: 5 more threads would only wait


def test_total_timeout_ends_a_download_from_a_trickling_server_in_seconds(tmp_path):
    with PlantedWeb("127.0.0.1") as web:
        body = jpeg(80, 80, 50)
        urls = {
            "headers": web.plant("/h.jpg", Route(body, trickle="headers", trickle_interval_s=1.0)),
            "body": web.plant("/b.jpg", Route(body, trickle="body", trickle_interval_s=1.0)),
            "fine": web.plant("/fine.jpg", Route(body)),
        }
        candidates = write_candidates(tmp_path / "in.parquet", list(urls.values()))
        pool = tmp_path / "pool"
        started = time.monotonic()
        process = run_cli(
            candidates, pool, "--total-timeout", "3", "--read-timeout", "2", "--retries", "0"
        )
        try:
            output = process.communicate(timeout=40)[0].decode()
        finally:
            process.kill()
        elapsed = time.monotonic() - started
    assert process.returncode == 0, output
    rows, _ = read_pool(pool)
    reasons = {row["url"]: row["error_message"] or "success" for row in rows}
    assert reasons == {urls["headers"]: "timeout", urls["body"]: "timeout", urls["fine"]: "success"}
    # Python and the CLI's imports take a few seconds; the requests themselves at most 3 s.
    assert elapsed < 20, elapsed


@pytest.mark.slow
def test_per_host_limits_hold_across_two_download_processes(tmp_path_factory, ray_session):
    """Two Ray workers download one mini-web host, split into k = 2 sub-partitions; the server
    counts at most the configured connections at once, and the configured rate."""
    from curation.minicc.build import build_world
    from curation.minicc.server import find_free_port, serve_world

    world_dir = tmp_path_factory.mktemp("politeness") / "world"
    world = build_world(world_dir, seed=3, scale_name="tiny", port=find_free_port(), processes=1)
    truth = pq.read_table(world_dir / "truth_images.parquet").to_pylist()
    healthy = [row["url"] for row in truth if row["fault"] is None]
    host = max(world["hosts"][1:], key=lambda h: sum(urlsplit(u).hostname == h for u in healthy))
    pictures = [url for url in healthy if urlsplit(url).hostname == host][:10]
    # The server answers by path, so a query makes another URL of the same picture: 40 URLs, long
    # enough for both worker processes to be downloading at the same time.
    urls = [f"{url}?copy={copy}" for copy in range(4) for url in pictures]
    assert len(set(urls)) == 40
    tmp_path = world_dir.parent
    candidates = write_candidates(tmp_path / "dedup" / "00000.parquet", urls)
    connections, rate = 4, 4.0
    config = replace(
        fast_config(
            tmp_path / "pool",
            [candidates],
            samples_per_shard=20,  # k = ceil(40 / 20) = 2 shards, one per worker process
            user_agent_token=world["robots"]["agent_token"],
            allow_networks=(world["allowed_cidr"],),
            per_host_connections=connections,
            per_host_requests_per_s=rate,
            timeouts=Timeouts(connect_s=2.0, read_s=2.0, total_s=5.0),
        ),
        max_in_flight=2,
        shards_per_task=1,  # one task per sub-partition, so two processes share the host
    )
    # Each answer takes 1 s, and each sub-partition may start a request every 1 / (rate / k) =
    # 0.5 s with connections / k = 2 at a time: each process alone reaches both of its shares.
    with serve_world(world_dir, latency_s=1.0) as web:
        started = time.monotonic()
        reports = download.run(config, QUIET)
        elapsed = time.monotonic() - started
        load = web.host_load()[host]
        two_second = web.host_load(window_s=2.0)[host]
    assert all(report.ok for report in reports)
    shard_hosts = [
        fsio.read_json(str(p))["extra"]["hosts"]
        for p in (tmp_path / "pool" / "_stats" / "download").glob("*.json")
    ]
    assert [list(hosts) for hosts in shard_hosts] == [[host], [host]]
    assert load["requests"] == 40 + 2  # each process asked for robots.txt once
    # Concurrency: the whole cluster holds the host to `connections`; above one process's share,
    # so the two processes did overlap.
    assert connections // 2 < load["peak_concurrency"] <= connections, load
    # Rate: each of the k sub-partitions spaces its requests 1 / (rate / k) apart, so a window of
    # W seconds holds at most rate * W + k of them.
    assert load["peak_requests_per_s"] <= rate + 2, load
    assert two_second["peak_requests_per_s"] <= 2 * rate + 2, two_second
    assert elapsed >= (40 + 2) / rate - 1.0


def test_bad_settings_fail_fast_with_a_config_error(tmp_path):
    from curation.stages.common import ConfigError

    pool = tmp_path / "pool"
    with pytest.raises(ConfigError, match="samples-per-shard"):
        fast_config(pool, samples_per_shard=20_000)
    with pytest.raises(ConfigError):
        fast_config(pool, allow_networks=("not-a-cidr",))
    with pytest.raises(ConfigError, match="connections"):
        fast_config(pool, per_host_connections=0)
    with pytest.raises(ConfigError, match="no candidate Parquet"):
        download.run(fast_config(pool, [tmp_path / "nothing-*.parquet"]), QUIET_LOCAL)
    with pytest.raises(ConfigError, match="no download plan"):
        download.run(fast_config(pool), QUIET_LOCAL)


def test_a_pool_refuses_to_quietly_leave_out_an_input_that_reads_after_planning(tmp_path):
    with PlantedWeb("127.0.0.1") as web:
        urls = [web.plant(f"/p{i}.jpg", Route(jpeg(40, 40, 30 * i))) for i in range(2)]
        first = write_candidates(tmp_path / "dedup" / "00000.parquet", urls[:1])
        later = write_candidates(tmp_path / "dedup" / "00001.parquet", urls[1:])
        intact = later.read_bytes()
        later.write_bytes(intact[:-8])
        config = fast_config(tmp_path / "pool", [first.parent])
        assert not download.run(config, QUIET_LOCAL)[0].ok
        later.write_bytes(intact)  # repaired: planning it now would change the planned shards
        with pytest.raises(
            fsio.PlanMismatchError, match="could not be read when this pool was planned"
        ):
            download.run(config, QUIET_LOCAL)


def test_one_task_downloads_several_one_host_shards_at_once_within_each_hosts_limits(tmp_path):
    """Four hosts, one shard each (the plan never puts two hosts of 6 URLs in a shard of 6); their
    2 slots each, 8 in all, are fewer than 2 x 6 threads, so one task holds all four shards and its threads
    serve every host at once, also while one host waits on a straggler. Each host still sees at
    most its 2 connections, and each pool shard still gets its own files and done marker."""
    hosts = ["127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"]
    with (
        PlantedWeb(hosts[0]) as a,
        PlantedWeb(hosts[1]) as b,
        PlantedWeb(hosts[2]) as c,
        PlantedWeb(hosts[3]) as d,
    ):
        webs = [a, b, c, d]
        urls = [
            web.plant(
                f"/p{i}.jpg",
                Route(jpeg(40, 40, 9 * i), delay_headers_s=0.8 if web is a and i == 0 else 0.1),
            )
            for web in webs
            for i in range(6)
        ]
        candidates = write_candidates(tmp_path / "in.parquet", urls)
        config = replace(
            fast_config(
                tmp_path / "pool",
                [candidates],
                samples_per_shard=6,
                per_host_connections=2,
                allow_networks=tuple(f"{host}/32" for host in hosts),
                timeouts=Timeouts(connect_s=5.0, read_s=5.0, total_s=10.0),  # a busy test box
            ),
            threads=6,
        )
        reports = download.run(config, QUIET_LOCAL)
        spans = [(min(web.arrivals), max(web.arrivals)) for web in webs]
        peaks = [web.peak_total_concurrency for web in webs]
    assert reports[-1].ok and len(reports[-1].completed) == 4
    assert max(peaks) == 2 and all(peak <= 2 for peak in peaks), peaks  # each host's limit
    # Every host was being downloaded while every other one was: one task, all hosts at once.
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans
    markers = sorted((tmp_path / "pool" / "_stats" / "download").glob("*.json"))
    assert [p.stem for p in markers] == ["00000", "00001", "00002", "00003"]
    shard_hosts = [list(fsio.read_json(str(p))["extra"]["hosts"]) for p in markers]
    assert sorted(host for hs in shard_hosts for host in hs) == hosts  # one host per shard
    assert all(len(hs) == 1 for hs in shard_hosts)
    assert not (tmp_path / "pool" / "_stats" / download.TASK_STAGE).exists()
    rows, images = read_pool(tmp_path / "pool")
    assert [row["status"] for row in rows] == ["success"] * 24
    assert len([name for name in images if name.endswith(".jpg")]) == 24


def test_download_tasks_take_shards_until_their_hosts_have_twice_the_threads_in_slots():
    def source(*host_parts):
        return ShardSource("plan.parquet", 0, tuple(host_parts))

    sources = {
        "00000": source((1, 1)),  # one host: 16 slots
        "00001": source((1, 1)),
        "00002": source((1, 5)),  # five hosts: 80 slots, a task alone
        "00003": source((2, 1)),  # half a split host: 8 slots
        "00004": source((1, 1)),
        "00005": source(),  # a plan that did not record it: a task alone
        "00006": source((1, 1)),
    }
    groups = download.group_shards(list(sources), sources, 16, 32, shards_per_task=3)
    assert groups == [
        ("00000", "00001", "00002"),  # 16 + 16 + 80 >= 64
        ("00003", "00004", "00005"),  # 8 + 16 + unknown
        ("00006",),
    ]
    assert download.group_shards(list(sources), sources, 16, 32, shards_per_task=1) == [
        (shard,) for shard in sources
    ]
    assert download.group_shards(["00000", "00001", "00004", "00006"], sources, 16, 32, 4) == [
        ("00000", "00001", "00004", "00006")  # 4 x 16 = 64 slots
    ]
