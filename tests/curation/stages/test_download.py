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
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation import fsio
from curation.download.fetcher import FetchConfig
from curation.download.http_exchange import Timeouts
from curation.download.imaging import ImageOptions
from curation.download.planted_web import PlantedWeb, Route
from curation.stages.download import DownloadConfig, download_pool

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


def fast_config(**fetch_overrides) -> DownloadConfig:
    fetch = {
        "allow_networks": ("127.0.0.1/32",),
        "retries": 1,
        "backoff_base_s": 0.05,
        "timeouts": Timeouts(connect_s=1.0, read_s=1.0, total_s=3.0),
    }
    fetch.update(fetch_overrides)
    return DownloadConfig(FetchConfig(**fetch), ImageOptions(64, "center_crop"), threads=8)


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
        reports = download_pool(
            [str(candidates.parent)], str(pool), fast_config(), samples_per_shard=8, progress=False
        )
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
    assert sum(r["extra"]["hosts"]["127.0.0.1"]["successes"] for r in records) == 6
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
        download_pool(
            [str(candidates)], str(pool), fast_config(), samples_per_shard=3, progress=False
        )
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
        config = fast_config(retries=1)
        download_pool(
            [str(candidates)],
            str(pool),
            config,
            samples_per_shard=10,
            use_ray=False,
            progress=False,
        )
        before_rows, before_members = read_pool(pool)
        assert {r["url"]: r["error_message"] for r in before_rows}[flaky] == "http_503"

        reports = download_pool(
            None, str(pool), config, retry_failed=True, use_ray=False, progress=False
        )
        assert [len(report.completed) for report in reports] == [0, 1]
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

    world_dir = tmp_path / "world"
    world = build_world(world_dir, seed=0, scale_name="tiny", port=free_port(), processes=2)
    warcs = sorted(str(p) for p in world_dir.glob("crawl-data/*/segments/*/warc/*.warc.gz"))
    # Caption filters off: some fault URLs carry only junk alt text, and the point is to fetch them all.
    assert extract.run(
        warcs,
        str(tmp_path / "candidates"),
        filters=TextFilters.disabled(),
        use_ray=False,
        progress=False,
    ).ok
    assert all(
        r.ok
        for r in dedup.run(
            str(tmp_path / "candidates"),
            str(tmp_path / "dedup"),
            buckets=2,
            use_ray=False,
            progress=False,
        )
        if r is not None
    )
    config = DownloadConfig(
        FetchConfig(
            user_agent_token=world["robots"]["agent_token"],
            allow_networks=(world["allowed_cidr"],),
            timeouts=Timeouts(connect_s=2.0, read_s=2.0, total_s=8.0),
            retries=2,
        ),
        ImageOptions(128, "keep_ratio_largest"),
        threads=16,
    )
    pool = tmp_path / "pool"
    with serve_world(world_dir) as web:
        reports = download_pool(
            [str(tmp_path / "dedup")], str(pool), config, samples_per_shard=200, progress=False
        )
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
