"""benchmarks/download.py's limit pass and encode check on the session's tiny mini web, and (slow)
one whole run ending with a parseable RESULT line."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import download as bench  # noqa: E402

from curation.score.images import encode_jpeg  # noqa: E402


def clean_image_urls(world: Path) -> list[str]:
    rows = pq.read_table(world / "truth_images.parquet", columns=["url", "fault"]).to_pylist()
    return [row["url"] for row in rows if row["fault"] is None]


def test_every_clean_url_resolves_to_the_file_the_server_sends(minicc_world, minicc_server):
    import urllib.request

    routes = json.loads((minicc_world / "www" / "routes.json").read_text())
    urls = clean_image_urls(minicc_world)
    files = [bench.served_file(minicc_world, routes, url) for url in urls]
    assert files and all(path is not None and path.is_file() for path in files)
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
    for url, path in list(zip(urls, files))[:5]:
        with direct.open(url, timeout=10) as answer:
            assert answer.read() == path.read_bytes()
    host = urls[0].split("/")[2]
    assert bench.served_file(minicc_world, routes, f"http://{host}/no/such/path.jpg") is None


def test_the_latency_floor_is_the_planted_slow_responses(minicc_world):
    routes = json.loads((minicc_world / "www" / "routes.json").read_text())
    rows = pq.read_table(minicc_world / "truth_images.parquet", columns=["url", "fault"])
    slow = [row["url"] for row in rows.to_pylist() if row["fault"] == "slow"]
    assert slow, "the tiny world plants slow responses"
    clean = clean_image_urls(minicc_world)
    assert bench.planted_delay_s(routes, clean) == 0.0
    assert bench.planted_delay_s(routes, clean + slow[:1]) > 1.0


def test_the_limit_pass_times_each_resolved_image(minicc_world):
    urls = clean_image_urls(minicc_world)[:20]
    limit = bench.limit_images_per_core_s(minicc_world, urls, 64, quality=95, passes=2)
    assert limit["images"] == 20 and limit["unresolved_urls"] == 0
    assert len(limit["pass_cpu_s"]) == 2 and limit["cpu_s"] == min(limit["pass_cpu_s"]) > 0
    assert limit["images_per_core_s"] == pytest.approx(20 / limit["cpu_s"])


def test_our_jpeg_encoding_matches_img2dataset_defaults():
    """img2dataset encodes with cv2.imencode at quality 95 (its default); ours with Pillow at
    --jpeg-quality 95: same chroma subsampling and quantization tables, so both sides do the
    same encoding work."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    ours = bench.encoding_of(encode_jpeg(Image.fromarray(pixels), 95))
    ok, theirs_bytes = cv2.imencode(".jpg", pixels[..., ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), 95])
    assert ok
    theirs = bench.encoding_of(theirs_bytes.tobytes())
    assert ours["subsampling"] == theirs["subsampling"] == "4:2:0"
    assert ours["tables"] == theirs["tables"]
    lower = bench.encoding_of(encode_jpeg(Image.fromarray(pixels), 80))
    assert lower["tables"] != ours["tables"]  # the check sees a quality difference


def test_first_jpeg_reads_a_stored_sample(tmp_path):
    import tarfile

    jpeg = encode_jpeg(Image.new("RGB", (8, 8), (200, 10, 10)), 95)
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        for name, data in (("k.txt", b"caption"), ("k.jpg", jpeg)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert bench.first_jpeg(tmp_path) == jpeg
    assert bench.first_jpeg(tmp_path / "empty") is None


@pytest.mark.slow
@pytest.mark.bench
def test_a_whole_run_ends_with_a_parseable_result_line():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "download.py"), "--scale", "tiny"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("RESULT ")
    report = json.loads(lines[-1].removeprefix("RESULT "))
    assert 0 < report["vs_limit"] and 0 < report["vs_reference"] and 0 < report["cpu_vs_limit"]
    assert report["target_met"] == (report["vs_limit"] >= 0.8 and report["vs_reference"] >= 2)
    assert "quantization tables identical" in result.stdout
    assert "ours / limit" in result.stdout
