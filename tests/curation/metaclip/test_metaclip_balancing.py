import numpy as np
import pyarrow as pa
import pytest

from curation.metaclip.balancing import (
    choose_texts,
    count_entries,
    entry_probabilities,
    keep_probabilities,
    sum_counts,
    uid_uniforms,
)


def counts_table(rows):
    return pa.table(
        {
            "lang": [r[0] for r in rows],
            "entry": pa.array([r[1] for r in rows], pa.int32()),
            "count": pa.array([r[2] for r in rows], pa.int64()),
        }
    )


def test_entry_probability_caps_head_entries_at_t():
    p = entry_probabilities(counts_table([("", 0, 10), ("", 1, 100)]), 3, t=50)[""]
    assert p.tolist() == [1.0, 0.5, 1.0]  # an entry nobody matched is never capped


def test_per_language_t_applies_to_its_language_and_default_to_others():
    counts = counts_table([("en", 0, 100), ("ja", 0, 100), ("", 0, 100)])
    p = entry_probabilities(counts, 1, t=50, t_per_lang={"ja": 10})
    assert (p["en"][0], p["ja"][0], p[""][0]) == (0.5, 0.1, 0.5)


def test_non_positive_t_is_refused():
    with pytest.raises(ValueError, match="positive"):
        entry_probabilities(counts_table([("", 0, 1)]), 1, t=0)


def test_keep_probability_is_one_minus_product_of_misses():
    entries = pa.array([[0, 1], [1], [], [1, 2], None], pa.list_(pa.int32()))
    groups = np.array([""] * 5, dtype=object)
    p = {"": np.array([1.0, 0.5, 0.2])}
    keep = keep_probabilities(entries, groups, p)
    np.testing.assert_allclose(keep, [1.0, 0.5, 0.0, 1 - 0.5 * 0.8, 0.0])


def test_uid_uniforms_are_a_pure_function_of_seed_purpose_and_uid():
    uids = [f"uid-{i}" for i in range(20_000)]
    draws = uid_uniforms(uids, seed=3, purpose="keep")
    assert draws.min() >= 0 and draws.max() < 1
    assert abs(draws.mean() - 0.5) < 0.01
    permutation = np.random.default_rng(0).permutation(len(uids))
    np.testing.assert_array_equal(
        uid_uniforms([uids[i] for i in permutation], 3, "keep"), draws[permutation]
    )
    assert not np.array_equal(uid_uniforms(uids, 4, "keep"), draws)
    assert not np.array_equal(uid_uniforms(uids, 3, "choose_text"), draws)


def test_choose_texts_is_stable_per_uid_and_uses_every_option():
    texts = pa.array([["a", "b", "c"]] * 300 + [[], None, [None, "x"]], pa.list_(pa.string()))
    uids = [f"u{i}" for i in range(len(texts))]
    chosen = choose_texts(texts, uids, seed=0)
    assert chosen == choose_texts(texts, uids, seed=0)
    assert set(chosen[:300]) == {"a", "b", "c"}
    assert chosen[300:] == [None, None, "x"]


def test_count_entries_counts_eligible_rows_per_group_and_sums():
    entries = pa.array([[0, 2], [2], [2], [1]], pa.list_(pa.int32()))
    groups = np.array(["en", "en", "ja", "en"], dtype=object)
    eligible = np.array([True, True, True, False])
    counts = count_entries(entries, groups, eligible)
    assert counts.to_pylist() == [
        {"lang": "en", "entry": 0, "count": 1},
        {"lang": "en", "entry": 2, "count": 2},
        {"lang": "ja", "entry": 2, "count": 1},
    ]
    doubled = sum_counts([counts, counts])
    assert doubled.column("count").to_pylist() == [2, 4, 2]


def test_balancing_caps_a_head_entry_near_t_and_keeps_the_tail():
    # 20k texts on entry 0 (head), 300 on entry 1 (tail); t = 1000.
    entries = pa.array([[0]] * 20_000 + [[1]] * 300, pa.list_(pa.int32()))
    groups = np.array([""] * len(entries), dtype=object)
    counts = count_entries(entries, groups, np.ones(len(entries), dtype=bool))
    p = entry_probabilities(counts, 2, t=1000)
    keep = uid_uniforms([f"u{i}" for i in range(len(entries))], 0, "keep") < keep_probabilities(
        entries, groups, p
    )
    assert abs(keep[:20_000].sum() - 1000) < 4 * np.sqrt(1000)
    assert keep[20_000:].all()
