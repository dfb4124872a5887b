"""The demo's filters on a tiny mini web: crawl it (extract -> dedup -> download), balance and
score the pool with a randomly initialised scorer, then `run_filters`. The tiny world plants too
few unsafe scenes at the generator's 5% to measure a removal rate, so this one is built with a
fifth of its scenes unsafe (the same pattern, the same truth column)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "score"))
from planted_pool import random_tiny_weights
from tests_support import mini_web_download_config

from curation.demo_filters import pool_truth, run_filters
from curation.metaclip.passes import TextColumns
from curation.minicc import catalog
from curation.minicc.build import build_world
from curation.minicc.server import find_free_port, serve_world
from curation.stages.common import RunOptions

LOCAL = RunOptions(use_ray=False, progress=False)
SEED = 3


@pytest.fixture(scope="module")
def filtered(tmp_path_factory, ray_session):
    from curation.stages import balance, dedup, download, extract, score

    root = tmp_path_factory.mktemp("filters")
    world_dir = root / "world"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(catalog, "UNSAFE_SHARE", 0.2)
        build_world(world_dir, seed=SEED, scale_name="tiny", port=find_free_port(), processes=2)
    world = json.loads((world_dir / "world.json").read_text())
    warcs = sorted(str(p) for p in world_dir.glob("crawl-data/*/segments/*/warc/*.warc.gz"))
    assert all(
        r.ok for r in extract.run(extract.ExtractConfig(tuple(warcs), str(root / "cand")), LOCAL)
    )
    assert all(
        r.ok
        for r in dedup.run(dedup.DedupConfig(str(root / "cand"), str(root / "dedup"), 2), LOCAL)
    )
    pool = root / "pool"
    with serve_world(world_dir):
        config = mini_web_download_config(world, str(root / "dedup"), str(pool), timeout_s=10.0)
        # On the session's Ray, so the two shards' downloads (each waits out the planted slow
        # routes) overlap.
        assert all(r.ok for r in download.run(config, RunOptions(progress=False)))
    assert all(
        r.ok
        for r in balance.run(
            balance.BalanceConfig(
                str(pool), str(world_dir), 300.0, columns=TextColumns(texts="texts")
            ),
            LOCAL,
        )
    )
    weights = random_tiny_weights(root)
    assert all(
        r.ok for r in score.run(score.ScoreConfig(str(pool), "tiny-clip", str(weights)), LOCAL)
    )
    # 40% of the labelled rows fit the head here, not the demo's fifth: a fifth of this tiny pool
    # is ~20 rows with 2-4 unsafe ones (the pool varies a little between runs: the downloads
    # race the planted slow routes), and a head fitted on one or two unsafe rows once removed
    # 1 of 14 held-out planted rows in a full-suite run.
    filters = run_filters(
        str(pool), str(world_dir), str(root / "filters"), SEED, LOCAL, nsfw_fit_share=0.4
    )
    print(json.dumps(filters, indent=1))
    return pool, world_dir, filters


def test_the_filters_object_has_the_issues_shape(filtered):
    _pool, _world, filters = filtered
    assert set(filters) == {"nsfw", "faces", "debias", "language"}
    assert {"planted", "removed_planted", "false_removal_rate"} <= set(filters["nsfw"])
    faces = filters["faces"]
    assert {"planted", "detected", "recall", "source"} <= set(faces)
    assert faces["recall"] == pytest.approx(faces["detected"] / faces["planted"], abs=1e-4)
    assert faces["recall"] >= 0.95
    # The mini web draws no faces: a detection there is a false one, and rare.
    assert faces["pool_images"] > 100
    assert faces["pool_images_with_faces"] <= 0.02 * faces["pool_images"]
    debias = filters["debias"]
    assert "off" in debias or {
        "association_before",
        "association_after",
        "target",
        "kept_share",
    } <= set(debias)
    language = filters["language"]
    assert language["target"] == {"en": 0.9, "other": 0.1}
    assert set(language["achieved"]) == {"en", "other"}
    if "off" not in language:
        assert abs(language["achieved"]["en"] - 0.9) < 0.05


def test_the_nsfw_filter_is_measured_on_rows_it_was_not_fitted_on(filtered):
    pool, world_dir, filters = filtered
    nsfw = filters["nsfw"]
    unsafe = sum(pool_truth(str(pool), str(world_dir))["unsafe"].to_pylist())
    assert nsfw["planted"] > 0 and nsfw["safe"] > 0
    assert nsfw["planted"] + nsfw["fitted_on"]["unsafe"] <= unsafe
    assert nsfw["planted"] + nsfw["safe"] + nsfw["fitted_on"]["rows"] <= faces_pool(filters)
    assert 0 <= nsfw["removed_planted"] <= nsfw["planted"]
    assert nsfw["false_removal_rate"] == round(nsfw["false_removed"] / nsfw["safe"], 4)


def faces_pool(filters: dict) -> int:
    return filters["faces"]["pool_images"]


def test_the_nsfw_filter_tells_the_stand_in_apart_end_to_end(filtered):
    """Through crawl, download, score (a random tiny-clip) and run_filters, the head removes the
    held-out planted rows far more than safe ones: a uid mix-up anywhere on that path would remove
    both at the same rate. ~10 planted and ~55 safe held-out rows cannot show the issue's bar
    (one false removal is 1.8%, one missed row 10%); tests/curation/test_nsfw_bar.py shows it on
    ~100 planted and ~380 safe rows. The head here is fitted on ~45 rows (4-6 unsafe), so it
    misses a row or two: on generator 5, three runs removed 10 of 10, 11 of 11, 9 of 9 at 0-1.8%;
    on generator 6 (larger shapes hide more of the stand-in) 11 of 12, 10 of 11 and, in a CI run,
    7 of 9, at 0-2.1%: 4 misses in 62 rows over the six runs. At a 7% miss rate a bar of 80% of 9
    rows fails about one run in eight, a bar of 60% about one run in 400; in a
    harness (the bar test's 1,000 pictures, heads fitted on 5 unsafe and 40 safe rows, 40 draws) the
    default head missed 3.9%."""
    nsfw = filtered[2]["nsfw"]
    assert nsfw["planted"] >= 5, nsfw
    assert nsfw["removed_planted"] >= 0.6 * nsfw["planted"], nsfw
    assert nsfw["false_removal_rate"] <= 0.1, nsfw
