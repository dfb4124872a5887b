"""Every dashboard page in a real headless Chromium: it loads without console errors, shows the
numbers the fixture's stats and sidecars hold, and its images load.

Each test saves a screenshot of its page to a temporary folder. `make screenshots RUN=demo-run`
sets DASHBOARD_RUN (a run folder, e.g. from `make demo`) and DASHBOARD_SCREENSHOTS=docs/screenshots:
then `test_screenshots_of_a_run` photographs every page of that run for the README."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from curation.dashboard.app import Dashboard
from curation.dashboard.server import make_server

CHROMIUM = "/usr/bin/chromium"
# Keep Chromium from calling any host of its own (updates, sync, safe browsing, QUIC probes).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
SCREENSHOTS_ENV, RUN_ENV = "DASHBOARD_SCREENSHOTS", "DASHBOARD_RUN"
VIEWPORT = {"width": 1000, "height": 700}

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} is missing: install Debian's chromium (`make browser`, needs apt-get as root)",
)


@contextlib.contextmanager
def serving(run: Path) -> Iterator[str]:
    server = make_server(Dashboard(str(run)), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def base_url(synthetic_run):
    with serving(synthetic_run) as url:
        yield url


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """docs/screenshots/ only when `make screenshots` asks; else a temporary folder."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    return Path(folder) if folder else tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


class PageVisit:
    """A browser tab that records console errors and refuses every request off 127.0.0.1."""

    def __init__(self, browser, base_url: str, screenshots: Path):
        self.base_url = base_url
        self.screenshots = screenshots
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.refused: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.context.route("**/*", self._only_loopback)

    def _only_loopback(self, route) -> None:
        url = route.request.url
        if url.startswith("data:") or urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.refused.append(url)
            route.abort()

    def open(self, route: str) -> None:
        self.page.goto(f"{self.base_url}/#/{route}")
        self.wait_ready(route.split("?")[0])

    def wait_ready(self, name: str) -> None:
        self.page.wait_for_selector(f"body[data-ready='{name}']", timeout=15000)

    def stat(self, name: str) -> str:
        return self.page.inner_text(f"[data-stat='{name}']")

    def text(self) -> str:
        return self.page.inner_text("main")

    def images_loaded(self, root: str = "main") -> int:
        """How many <img> there are under `root`, after checking every one decoded (naturalWidth > 0)."""
        widths = self.page.eval_on_selector_all(
            f"{root} img", "imgs => imgs.map(i => i.naturalWidth)"
        )
        assert all(w > 0 for w in widths), f"images that did not load: {widths}"
        return len(widths)

    def finish(self, screenshot: str) -> None:
        assert self.errors == [], f"console errors: {self.errors}"
        assert self.refused == [], f"requests off 127.0.0.1: {self.refused}"
        self.page.evaluate("window.scrollTo(0, 0)")
        save_screenshot(self.page.screenshot(), self.screenshots / f"{screenshot}.png")
        self.context.close()


def save_screenshot(png: bytes, path: Path) -> None:
    """A small PNG: the viewport quantised to a 128-colour palette. An existing screenshot that
    differs in under 1% of its pixels (the temporary run path, anti-aliasing) is left as it is, so
    running the tests does not churn the committed files."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    if path.exists():
        old = Image.open(path).convert("RGB")
        if old.size == image.size:
            # the palette shifts colours a little: count the pixels that moved by more than that
            moved = (
                np.abs(np.asarray(old, np.int16) - np.asarray(image, np.int16)).max(axis=-1) > 24
            )
            if moved.mean() < 0.01:
                return
    path.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(128, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)


@pytest.fixture()
def visit(browser, base_url, screenshots):
    return PageVisit(browser, base_url, screenshots)


def stage_row(visit: PageVisit, stage: str) -> list[str]:
    return visit.page.eval_on_selector(
        "#stage-table",
        f"t => [...t.rows].find(r => r.cells[0].innerText === '{stage}')"
        f"  ? [...[...t.rows].find(r => r.cells[0].innerText === '{stage}').cells].map(c => c.innerText) : null",
    )


def test_overview_shows_each_stage_counts_summed_over_shards(visit):
    visit.open("overview")
    # stage, shards, in, out, dropped, drops by reason, errors: summed over the fixture's records
    assert stage_row(visit, "extract")[:7] == [
        "extract",
        "2",
        "40",
        "25",
        "15",
        "bad_url: 5, no_alt: 10",
        "truncated_record: 1",
    ]
    assert stage_row(visit, "download")[:6] == [
        "download",
        "2",
        "10",
        "7",
        "3",
        "http_404: 1, robots_disallowed: 1, timeout: 1",
    ]
    assert stage_row(visit, "score_filter")[:6] == [
        "score_filter",
        "2",
        "7",
        "4",
        "3",
        "below_score_threshold: 3",
    ]
    assert stage_row(visit, "shards")[:5] == ["shards", "1", "2", "2", "0"]
    funnel = visit.page.eval_on_selector_all(
        "section:has(h2:text('Funnel')) text", "ts => ts.map(t => t.textContent)"
    )
    # label, value pairs from WARC records (60 + 40 in the extract records' extra) to training samples
    assert funnel == [
        "WARC records read",
        "100",
        "images seen",
        "40",
        "candidate pairs",
        "25",
        "unique image URLs",
        "10",
        "downloaded",
        "7",
        "kept by MetaCLIP balancing",
        "4",
        "kept by CLIP score",
        "4",
        "kept by near-dup + decontamination",
        "4",
        "training samples",
        "2",
    ]
    assert "Not run yet" not in visit.text()
    visit.finish("overview")


def test_crawl_shows_success_rate_failure_reasons_and_hosts(visit):
    visit.open("crawl")
    assert (
        visit.stat("rows"),
        visit.stat("success"),
        visit.stat("success_rate"),
        visit.stat("hosts"),
    ) == ("10", "7", "70.0%", "3")
    text = visit.text()
    for reason in ("http_404", "timeout", "robots_disallowed"):
        assert reason in text
    assert "c.example" in text
    visit.finish("crawl")


def test_metaclip_shows_head_tail_shares_and_entry_search_grid(visit):
    visit.open("metaclip")
    assert visit.stat("t") == "2"
    assert (visit.stat("matches_before"), visit.stat("matches_after")) == ("10", "7")
    assert visit.stat("head_share") == "80.0% → 71.4%"
    assert visit.stat("tail_share") == "20.0% → 28.6%"
    assert visit.page.locator("path.line").count() == 2
    visit.page.fill("#entry-search", "dog")
    visit.page.click("form button")
    visit.page.wait_for_selector("#search-results .grid")
    visit.page.wait_for_function(
        "[...document.querySelectorAll('#search-results img')].every(i => i.complete)"
    )
    assert "“dog” (id 1): 3 matches" in visit.page.inner_text("#search-results")
    assert visit.images_loaded("#search-results") == 3  # B, D and F mention a dog
    visit.finish("metaclip")


def test_score_shows_threshold_counts_and_grids_either_side(visit):
    visit.open("score")
    assert (
        visit.stat("rows"),
        visit.stat("threshold"),
        visit.stat("above"),
        visit.stat("below"),
    ) == ("7", "0.25", "4", "3")
    above = visit.page.inner_text("section:has(h2:text('Just above'))")
    below = visit.page.inner_text("section:has(h2:text('Just below'))")
    assert "sample D" in above and "sample B" not in above
    assert "sample G" in below and "sample D" not in below
    assert visit.images_loaded() == 7
    visit.finish("score")


def test_neardup_shows_clusters_with_members(visit):
    visit.open("neardup")
    assert (
        visit.stat("clusters"),
        visit.stat("in_clusters"),
        visit.stat("dropped"),
        visit.stat("contaminated"),
    ) == ("2", "4", "2", "1")
    clusters = visit.page.locator(".cluster")
    assert clusters.count() == 2
    largest = {c.inner_text() for c in clusters.all()}
    assert any("cluster 7" in c and "sample A" in c and "sample C" in c for c in largest)
    assert any("cluster 9" in c and "sample D" in c and "sample F" in c for c in largest)
    assert "near eval/000012" in visit.text()
    assert (
        visit.page.inner_text("#neardup-summary")
        == "pairs found by signal: sha256: 1, embedding: 2, dhash: 0 · eval images compared: 20"
    )
    assert visit.images_loaded() == 5
    visit.finish("neardup")


def test_training_shows_curves_phases_and_eval_results(visit):
    visit.open("training")
    assert (
        visit.stat("steps"),
        visit.stat("last_step"),
        visit.stat("last_loss"),
        visit.stat("phases"),
    ) == ("6", "5", "1.25", "1 → 2")
    text = visit.text()
    for title in (
        "Loss terms",
        "LocCa tasks",
        "Learning rate",
        "Temperature t and bias b",
        "Gradient norm",
        "Evaluation",
    ):
        assert title in text
    loss_legend = visit.page.eval_on_selector_all(
        "section:has(h2:text('Loss terms')) .legend span", "spans => spans.map(s => s.innerText)"
    )
    assert loss_legend == ["locca", "loss", "sigmoid", "silc"]
    # phase 1 spans steps 0-3, phase 2 steps 3-5, of a 5-step axis: bands of 3/5 and 2/5 of the width
    bands = visit.page.eval_on_selector_all(
        "section:has(h2:text('Loss terms')) rect.band", "rs => rs.map(r => r.width.baseVal.value)"
    )
    assert len(bands) == 2 and abs(bands[0] / bands[1] - 1.5) < 0.01
    # Both rounds' reports, from where `training eval` writes them, side by side.
    header = visit.page.eval_on_selector_all("#eval-table th", "ths => ths.map(t => t.innerText)")
    assert header == [
        "metric",
        "train/eval/step_00000005.json",
        "train_round0/eval/step_00000005.json",
    ]
    row = visit.page.eval_on_selector(
        "#eval-table",
        "t => [...[...t.rows].find(r => r.cells[0].innerText === 'imagenet_like.top1').cells]"
        ".map(c => c.innerText)",
    )
    assert row == ["imagenet_like.top1", "0.125", "0.0625"]
    assert "Missing" not in text
    visit.page.select_option("#training-run", "train_round0")
    visit.page.wait_for_function("document.body.dataset.route === '#/training?run=train_round0'")
    assert visit.stat("steps") == "3"
    visit.open("training")
    visit.finish("training")


def test_sample_browser_filters_by_decision_and_shows_images(visit):
    visit.open("samples")
    options = visit.page.eval_on_selector_all("#decision option", "os => os.map(o => o.innerText)")
    assert {
        "all (10)",
        "kept (2)",
        "dropped (8)",
        "balance: not sampled (3)",
        "score: not kept (2)",
        "download: http_404 (1)",
    } <= set(options)
    assert visit.images_loaded() == 7
    visit.page.select_option("#decision", "kept")
    visit.page.wait_for_function("document.body.dataset.route === '#/samples?decision=kept&page=0'")
    assert visit.page.inner_text("#page-info") == "page 1 of 1 · 2 samples"
    texts = visit.page.eval_on_selector_all(".sample .text", "els => els.map(e => e.innerText)")
    assert texts == ["a photo of sample A", "a photo of sample D"]
    assert visit.images_loaded() == 2
    visit.open("samples?decision=score&page=0")
    assert "score: not kept" in visit.text() and "sample E" in visit.text()
    visit.open("samples")
    visit.finish("samples")


def test_every_page_of_a_run_with_only_candidates_says_what_is_missing(browser, tmp_path):
    stats = tmp_path / "candidates" / "_stats" / "extract"
    stats.mkdir(parents=True)
    (stats / "00000.json").write_text(
        '{"stage": "extract", "shard": "00000", "rows_in": 5, "rows_out": 4}'
    )
    with serving(tmp_path) as url:
        visit = PageVisit(browser, url, tmp_path / "screenshots")
        for page in ("crawl", "metaclip", "score", "neardup", "training", "samples"):
            visit.open(page)
            notes = visit.page.eval_on_selector_all(
                "main .missing", "ms => ms.map(m => m.innerText)"
            )
            assert notes and all(n.startswith("Missing: ") for n in notes), (page, notes)
            assert visit.errors == [], (page, visit.errors)
        visit.finish("candidates-only")


def test_a_corrupt_shard_is_named_on_the_page(browser, synthetic_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    sidecar = run / "pool" / "00001.parquet"
    sidecar.write_bytes(sidecar.read_bytes()[:-100])
    with serving(run) as url:
        visit = PageVisit(browser, url, tmp_path / "screenshots")
        visit.open("crawl")
        assert str(sidecar) in visit.page.inner_text("#unreadable")
        visit.open("samples")
        assert str(sidecar) in visit.page.inner_text("#unreadable")
        assert visit.images_loaded() == 4  # shard 00000's downloaded samples
        visit.finish("corrupt-shard")


@pytest.mark.skipif(not os.environ.get(RUN_ENV), reason=f"{RUN_ENV} names no run folder")
def test_screenshots_of_a_run(browser, screenshots):
    """`make screenshots RUN=demo-run`: every page of a real run, for the README."""
    with serving(Path(os.environ[RUN_ENV])) as url:
        for page in ("overview", "crawl", "metaclip", "score", "neardup", "training", "samples"):
            visit = PageVisit(browser, url, screenshots)
            visit.open(page)
            visit.images_loaded()
            visit.finish(page)
