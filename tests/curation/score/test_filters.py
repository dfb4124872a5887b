import numpy as np
import pyarrow as pa
import pytest

from curation.score.filters import (
    BasicRules,
    ScoreHistogram,
    basic_rule_failures,
    exact_top_fraction,
    top_fraction_threshold,
)


def test_exact_top_fraction_keeps_the_k_largest_scores_across_chunks():
    rng = np.random.default_rng(0)
    chunks = [rng.uniform(-0.2, 0.5, size=n).astype(np.float32) for n in (100, 37, 250)]
    everything = np.concatenate(chunks)
    result = exact_top_fraction(chunks, 0.3)
    k = int(np.ceil(0.3 * everything.size))
    assert result.target_keep == k
    assert np.count_nonzero(everything >= result.threshold) == k
    assert result.threshold == np.sort(everything)[::-1][k - 1]


def test_exact_top_fraction_ignores_unscored_rows_and_reports_ties():
    scores = np.array([0.1, 0.2, 0.2, 0.2, np.nan, 0.05], dtype=np.float32)
    result = exact_top_fraction([scores], 0.4)  # 5 finite scores -> keep 2
    assert result.scores == 5 and result.target_keep == 2
    assert result.threshold == pytest.approx(0.2)
    assert result.max_extra_kept == 1  # three scores tie at the cut


@pytest.mark.parametrize("fraction", [0.01, 0.3, 0.9])
def test_histogram_threshold_is_within_its_stated_bounds_of_the_exact_one(fraction):
    rng = np.random.default_rng(1)
    scores = np.clip(rng.normal(0.22, 0.05, size=200_000), -1, 1).astype(np.float32)
    exact = exact_top_fraction([scores], fraction)
    approx = top_fraction_threshold(
        np.array_split(scores, 7), fraction, method="histogram", bins=1 << 12
    )
    kept = int(np.count_nonzero(scores >= approx.threshold))
    assert approx.target_keep <= kept <= approx.target_keep + approx.max_extra_kept
    assert exact.threshold - approx.value_error <= approx.threshold <= exact.threshold
    assert approx.value_error == pytest.approx(2 / 4096)


def test_auto_quantile_picks_exact_for_a_small_pool():
    scores = np.linspace(-1, 1, 101, dtype=np.float32)
    assert top_fraction_threshold([scores], 0.5, "auto", total=101).method == "exact"
    assert top_fraction_threshold([scores], 0.5, "auto", total=10**12).method == "histogram"


def test_histogram_merges_like_one_pass():
    rng = np.random.default_rng(2)
    scores = rng.uniform(-1, 1, 5000).astype(np.float32)
    whole, parts = ScoreHistogram(1024), ScoreHistogram(1024)
    whole.add(scores)
    for part in np.array_split(scores, 3):
        parts.add(part)
    assert np.array_equal(whole.counts, parts.counts)


def test_bad_fraction_fails_fast():
    with pytest.raises(ValueError, match="top fraction"):
        exact_top_fraction([np.ones(3, np.float32)], 1.5)


def test_basic_rules_flag_each_failing_rule_on_original_sizes():
    table = pa.table(
        {
            "text": ["a red circle on grass", "two words", "tiny", None, "a blue square in snow"],
            "width": pa.array([300, 300, 300, 300, 120], pa.int32()),
            "height": pa.array([300, 300, 300, 1000, 120], pa.int32()),
            "original_width": pa.array([300, 300, 300, 300, None], pa.int32()),
            "original_height": pa.array([300, 300, 300, 1000, None], pa.int32()),
        }
    )
    failures = basic_rule_failures(table, BasicRules())
    assert failures["basic_caption_words"].tolist() == [False, True, True, True, False]
    assert failures["basic_caption_chars"].tolist() == [False, False, True, True, False]
    assert failures["basic_aspect_ratio"].tolist() == [False, False, False, True, False]
    # Row 4 has no original size: its stored 120 px side is used.
    assert failures["basic_min_side"].tolist() == [False, False, False, False, True]
