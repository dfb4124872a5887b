"""The "Debias & languages" page's data: the numbers the debias and langmix stages wrote."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "stages"))
from test_browser import PageVisit, browser, serving  # noqa: F401 (browser: a fixture)
from text_pool import write_text_pool

from curation.dashboard.app import Dashboard
from curation.dashboard.server import to_json
from curation.stages.common import RunOptions
from curation.stages.debias import DebiasConfig
from curation.stages.debias import run as run_debias
from curation.stages.langmix import LangmixConfig
from curation.stages.langmix import run as run_langmix

LOCAL = RunOptions(use_ray=False, progress=False)


@pytest.fixture(scope="module")
def resampled_run(tmp_path_factory) -> tuple[Path, dict, dict]:
    """A run whose pool went through debias (a planted nurse/pilot association) and langmix."""
    tmp_path = tmp_path_factory.mktemp("resampling")
    pool = tmp_path / "run" / "pool"
    pool.mkdir(parents=True)
    texts = ["a woman working as a nurse"] * 80 + ["a man working as a nurse"] * 20
    texts += ["a man working as a pilot"] * 60 + ["a woman working as a pilot"] * 40
    write_text_pool(pool, texts, 100, ["en"] * 150 + ["de"] * 50)
    (tmp_path / "concepts.txt").write_text("nurse\npilot\n")
    debias = run_debias(
        DebiasConfig(str(pool), str(tmp_path / "concepts.txt"), min_concept_rows=10, max_drop=0.5),
        LOCAL,
    )[-1].summary
    langmix = run_langmix(LangmixConfig(str(pool), {"en": 0.8, "other": 0.2}), LOCAL)[-1].summary
    return tmp_path / "run", debias, langmix


def test_page_shows_associations_and_language_shares_before_and_after(resampled_run):
    run, debias, langmix = resampled_run
    page = Dashboard(str(run)).page("resampling")
    assert page["missing"] == []
    assert page["debias"]["association_before"] == debias["association_before"] > 0.2
    assert page["debias"]["association_after"] == debias["association_after"]
    assert {c["text"] for c in page["debias"]["top_concepts"]} == {"nurse", "pilot"}
    assert page["debias_stats"]["rows_out"] == debias["kept_rows"]
    assert page["langmix"]["achieved"] == langmix["achieved"]
    assert page["langmix"]["after"] == ["debias"]
    to_json(page)  # the server can send it


def test_page_without_the_stages_says_what_is_missing(tmp_path):
    (tmp_path / "pool").mkdir()
    page = Dashboard(str(tmp_path)).page("resampling")
    assert [m["part"] for m in page["missing"]] == ["debias", "langmix"]


def test_page_draws_in_a_browser(browser, resampled_run, tmp_path):  # noqa: F811
    run, debias, langmix = resampled_run
    with serving(run) as url:
        visit = PageVisit(browser, url, tmp_path / "screenshots")
        visit.open("resampling")
        assert visit.stat("association_before") == f"{debias['association_before']:.3f}"
        assert visit.stat("association_after") == f"{debias['association_after']:.3f}"
        rows = visit.page.eval_on_selector_all("#debias-concepts tbody tr", "rs => rs.length")
        assert rows == 2
        shares = visit.page.inner_text("#langmix-shares")
        assert f"{100 * langmix['achieved']['en']:.1f}%" in shares
        visit.finish("resampling")
