"""The dashboard's data side on the hand-built run (numbers in dashboard_run_fixture's docstring)."""

from __future__ import annotations

import http.client
import io
import json
import shutil
import tarfile
import threading
import urllib.error
import urllib.request

import pytest
from dashboard_run_fixture import build_run

from curation.dashboard.app import Dashboard
from curation.dashboard.server import check_loopback, make_server, to_json
from curation.dashboard.training import TrainingLog, training_page


@pytest.fixture(scope="module")
def dashboard(synthetic_run) -> Dashboard:
    return Dashboard(str(synthetic_run))


def test_each_sample_is_counted_under_the_first_check_it_fails(dashboard):
    assert dashboard.decision_index().totals() == {
        "kept": 2,
        "balance: not sampled": 3,
        "score: not kept": 2,
        "download: http_404": 1,
        "download: timeout": 1,
        "download: robots_disallowed": 1,
    }


def test_pages_run_across_shard_boundaries_in_pool_order(dashboard):
    keys = [[s["key"] for s in dashboard.samples("all", page, 4)["samples"]] for page in range(3)]
    assert keys == [
        ["000000000", "000000001", "000000002", "000000003"],
        ["000000004", "000000005", "000010000", "000010001"],
        ["000010002", "000010003"],
    ]
    assert dashboard.samples("all", 3, 4)["samples"] == []


def test_a_stage_name_filters_every_reason_of_that_stage(dashboard):
    page = dashboard.samples("download", 0, 10)
    assert page["total"] == 3
    assert {s["error_message"] for s in page["samples"]} == {
        "http_404",
        "timeout",
        "robots_disallowed",
    }
    assert not any(s["has_image"] for s in page["samples"])
    kept = dashboard.samples("kept", 0, 10)["samples"]
    assert [(s["text"], s["clip_score_test"] > 0.25, s["dup_cluster"]) for s in kept] == [
        ("a photo of sample A", True, 7),
        ("a photo of sample D", True, 9),
    ]


def test_curation_files_in_pool_order_give_the_same_pages(dashboard, tmp_path):
    in_order = Dashboard(str(build_run(tmp_path / "run", curation_in_pool_order=True)))
    assert in_order.decision_index().same_order[0] == {"balance", "score", "neardup"}
    assert dashboard.decision_index().same_order[0] == frozenset()
    for decision in ("kept", "score", "balance"):
        assert (
            in_order.samples(decision, 0, 10)["samples"]
            == dashboard.samples(decision, 0, 10)["samples"]
        )
    for side in ("just_above", "just_below"):
        assert in_order.score()[side] == dashboard.score()[side]


def test_an_unknown_decision_filter_is_refused(dashboard):
    with pytest.raises(ValueError, match="unknown decision filter"):
        dashboard.samples("bogus")


def test_crawl_bins_sizes_and_aspect_ratios_of_downloaded_images(dashboard):
    page = dashboard.crawl()
    sides = {b["label"]: b["count"] for b in page["side_histogram"] if b["count"]}
    assert sides == {"256–512": 2, "512–1024": 3, "1024–2048": 1, "2048–4096": 1}
    aspects = {b["label"]: b["count"] for b in page["aspect_histogram"] if b["count"]}
    # 300x900 = 0.33; 256x192, 640x640, 500x500, 800x600 in [1, 1.41); 1200x400 = 3, 2048x1024 = 2
    assert aspects == {"0.25–0.354": 1, "1–1.414": 4, "2–2.828": 1, "2.828–4": 1}
    assert page["top_failing_hosts"][0]["failed"] == 1


def test_entry_search_matches_a_substring_and_returns_its_samples(dashboard):
    result = dashboard.metaclip_search("car")
    assert result["entry"]["name"] == "red car"
    assert [(s["text"], s["kept"]) for s in result["samples"]] == [("a photo of sample D", True)]
    assert dashboard.metaclip_search("zebra")["entry"] is None


def test_score_grids_hold_the_samples_nearest_the_threshold(dashboard):
    page = dashboard.score()
    assert [s["text"][-1] for s in page["just_above"]] == ["D", "C", "A", "F"]
    assert [s["text"][-1] for s in page["just_below"]] == ["G", "B", "E"]
    assert sum(page["histogram"]["counts"]) == 7


def test_neardup_lists_clusters_with_their_members_and_eval_neighbours(dashboard):
    page = dashboard.neardup()
    members = {
        c["cluster"]: [(s["text"][-1], s["kept"]) for s in c["members"]]
        for c in page["top_clusters"]
    }
    assert members == {7: [("A", True), ("C", False)], 9: [("D", True), ("F", False)]}
    assert [(s["text"][-1], s["nearest_eval"]) for s in page["contaminated_samples"]] == [
        ("E", "eval/000012")
    ]
    assert page["size_histogram"] == [{"size": 2, "clusters": 2}]


def test_training_log_skips_a_cut_line_and_follows_a_growing_file(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    log = train / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 2.0, "phase": 1}\n{"step": 2, "lo')
    reader = TrainingLog(str(train))
    page = training_page([reader])
    assert (page["steps"], page["bad_lines"]) == (1, 1)
    log.write_text('{"step": 1, "loss": 2.0, "phase": 1}\n{"step": 2, "loss": 1.5, "phase": 2}\n')
    page = training_page([reader])
    assert page["steps"] == 2 and page["phases"][1] == {"phase": 2, "first_step": 2, "last_step": 2}
    assert page["charts"][0]["series"]["loss"] == [[1, 2.0], [2, 1.5]]
    assert [m["part"] for m in page["missing"]] == ["eval"]


def test_training_log_of_a_resumed_run_keeps_the_last_record_of_each_step(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    steps = [(1, 3.0), (2, 2.5), (3, 2.4), (2, 2.6), (3, 2.2), (4, 2.0)]  # resumed from step 1
    (train / "metrics.jsonl").write_text(
        "".join(f'{{"step": {step}, "loss": {loss}}}\n' for step, loss in steps)
    )
    page = training_page([TrainingLog(str(train))])
    assert page["steps"] == 4 and page["bad_lines"] == 0
    assert page["charts"][0]["series"]["loss"] == [[1, 3.0], [2, 2.6], [3, 2.2], [4, 2.0]]
    assert page["last"] == {"step": 4, "loss": 2.0}


def test_images_come_byte_exact_from_the_pool_tar(dashboard, synthetic_run):
    with tarfile.open(synthetic_run / "pool" / "00001.tar") as tar:
        stored = tar.extractfile("000010002.jpg").read()
    assert dashboard.image("00001", "000010002") == (stored, "image/jpeg")
    with pytest.raises(KeyError):
        dashboard.image("00000", "000000004")  # a failed download has no image
    with pytest.raises(KeyError):
        dashboard.image("../00000", "000000000")


def test_a_tar_is_indexed_once_when_many_images_are_asked_at_once(synthetic_run, monkeypatch):
    from curation.dashboard import images

    walked = []
    build = images.build_tar_index
    monkeypatch.setattr(images, "build_tar_index", lambda url: walked.append(url) or build(url))
    tar_images = images.TarImages(lambda shard: str(synthetic_run / "pool" / f"{shard}.tar"))
    threads = [
        threading.Thread(target=tar_images.image, args=("00000", f"00000000{i % 4}"))
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert walked == [str(synthetic_run / "pool" / "00000.tar")]


def test_a_run_without_outputs_names_what_is_missing_and_its_command(tmp_path):
    empty = Dashboard(str(tmp_path))
    assert [m["part"] for m in empty.overview()["missing"]] == ["stats"]
    assert [m["part"] for m in empty.crawl()["missing"]] == ["pool"]
    for page, part in (
        (empty.metaclip(), "balance"),
        (empty.score(), "score"),
        (empty.neardup(), "neardup"),
        (empty.training_page(), "train"),
    ):
        assert page["missing"][0]["part"] == part and page["missing"][0]["command"]


def test_only_loopback_hosts_are_accepted():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        check_loopback(host)
    for host in ("0.0.0.0", "::", "192.0.2.1", "example.org"):
        with pytest.raises(ValueError, match="loopback"):
            check_loopback(host)


def test_json_has_no_nan():
    assert json.loads(to_json({"a": float("nan"), "b": [float("inf"), 1.5]})) == {
        "a": None,
        "b": [None, 1.5],
    }


def test_http_api_answers_pages_images_and_errors(dashboard):
    server = make_server(dashboard, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{base}/api/samples?decision=kept&size=1&page=1") as response:
            assert json.load(response)["samples"][0]["text"] == "a photo of sample D"
        with urllib.request.urlopen(f"{base}/api/image?shard=00000&key=000000000") as response:
            assert (
                response.headers["Content-Type"] == "image/jpeg" and response.read(2) == b"\xff\xd8"
            )
        with urllib.request.urlopen(f"{base}/") as response:
            assert b"/static/app.js" in response.read()
        for path, status in (
            ("/api/samples?decision=bogus", 400),
            ("/api/image?shard=00000&key=x", 404),
            ("/etc/passwd", 404),
            ("/static/../server.py", 404),
        ):
            with pytest.raises(urllib.error.HTTPError) as raised:
                urllib.request.urlopen(base + path)
            assert raised.value.code == status, path
    finally:
        server.shutdown()
        server.server_close()


def test_reads_a_run_on_s3(synthetic_run, s3_bucket):
    import s3fs

    s3fs.S3FileSystem().put(str(synthetic_run), f"{s3_bucket[5:]}/run", recursive=True)
    remote = Dashboard(f"{s3_bucket}/run")
    assert {s["stage"]: s["rows_out"] for s in remote.overview()["stages"]}["download"] == 7
    assert remote.crawl()["success"] == 7
    assert remote.decision_index().totals()["kept"] == 2
    data, _ = remote.image("00001", "000010000")
    assert io.BytesIO(data).read(2) == b"\xff\xd8"


@pytest.fixture()
def served(request):
    """A server on 127.0.0.1 for the run folder `request.param`-style factory: served(run) → base."""
    servers = []

    def serve(run) -> str:
        server = make_server(Dashboard(str(run)), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def get(address: str, path: str, host: str | None = None) -> tuple[int, dict]:
    """GET over a plain connection to `address`, with `host` as the Host header (default: address)."""
    connection = http.client.HTTPConnection(address, timeout=30)
    connection.putrequest("GET", path, skip_host=True)
    connection.putheader("Host", address if host is None else host)
    connection.endheaders()
    response = connection.getresponse()
    body = (
        json.loads(response.read() or b"{}")
        if "json" in (response.getheader("Content-Type") or "")
        else {}
    )
    connection.close()
    return response.status, body


def test_requests_naming_another_host_are_refused(synthetic_run, served):
    """DNS rebinding: a page on evil.example resolves its name to 127.0.0.1 and calls the API."""
    address = served(synthetic_run)
    port = address.rsplit(":", 1)[1]
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", ""):
        status, body = get(address, "/api/overview", host)
        assert status == 403, host
        assert "stages" not in body
    for host in (address, f"localhost:{port}", "localhost", "LOCALHOST:" + port):
        assert get(address, "/api/overview", host)[0] == 200, host


PAGES = ("overview", "crawl", "metaclip", "score", "neardup", "training", "samples")


def test_a_corrupt_pool_shard_is_named_and_left_out_of_every_page(synthetic_run, tmp_path, served):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    sidecar = run / "pool" / "00001.parquet"
    sidecar.write_bytes(sidecar.read_bytes()[:-100])  # the Parquet footer is gone
    address = served(run)
    # The overview reads only stats records: it lists the file once another page has found it.
    for page in (*PAGES[1:], PAGES[0]):
        status, body = get(address, f"/api/{page}")
        assert status == 200, (page, body)
        assert [(u["shard"], u["file"]) for u in body["unreadable"]] == [("00001", str(sidecar))]
    assert get(address, "/api/crawl")[1]["rows"] == 6  # shard 00000's six URLs only
    samples = get(address, "/api/samples")[1]
    assert samples["total"] == 6 and {s["shard"] for s in samples["samples"]} == {"00000"}


def test_a_corrupt_curation_file_is_named_too(synthetic_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    (run / "pool" / "curation" / "score" / "00000.parquet").write_bytes(b"PAR1 not really")
    dashboard = Dashboard(str(run))
    page = dashboard.page("score")
    assert page["rows"] == 3  # the 3 rows of shard 00001's score file
    assert [u["shard"] for u in page["unreadable"]] == ["00000"]


def test_training_page_reads_both_demo_rounds_where_training_eval_writes(synthetic_run):
    dashboard = Dashboard(str(synthetic_run))
    page = dashboard.training_page()
    assert page["runs"] == ["train", "train_round0"] and page["run"] == "train"
    assert page["missing"] == [] and page["steps"] == 6
    assert [(e["file"], e["metrics"]["imagenet_like.top1"]) for e in page["evals"]] == [
        ("train/eval/step_00000005.json", 0.125),
        ("train_round0/eval/step_00000005.json", 0.0625),
    ]
    round0 = dashboard.training_page("train_round0")
    assert round0["run"] == "train_round0" and round0["steps"] == 3
    with pytest.raises(KeyError):
        dashboard.training_page("train_shards")


def test_a_run_with_only_candidates_names_what_every_page_misses(tmp_path):
    stats = tmp_path / "candidates" / "_stats" / "extract"
    stats.mkdir(parents=True)
    (stats / "00000.json").write_text(
        json.dumps({"stage": "extract", "shard": "00000", "rows_in": 5, "rows_out": 4})
    )
    dashboard = Dashboard(str(tmp_path))
    assert dashboard.overview()["missing"] == []
    for page, part in (
        ("crawl", "pool"),
        ("metaclip", "balance"),
        ("score", "score"),
        ("neardup", "neardup"),
        ("training_page", "train"),
        ("samples", "pool"),
    ):
        assert dashboard.page(page)["missing"][0]["part"] == part, page
