"""The demo's report: truth-graded shares, the reference arm's shards, standard errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.demo_report import (
    arm_metrics,
    arms_table,
    comparisons_table,
    correctly_captioned_share,
    latest_eval,
    paired_comparisons,
    paired_difference,
    seed_comparisons,
    seed_comparisons_table,
    standard_error,
    write_reference_shards,
)
from training.data.tars import iter_tar_samples, write_tar


def _shard(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    write_tar(
        folder / "00000.tar",
        [(k, {"jpg": b"x" + k.encode(), "txt": t.encode()}) for k, _, t in rows],
    )
    table = pa.table(
        {
            "key": [k for k, _, _ in rows],
            "url": [u for _, u, _ in rows],
            "text": [t for _, _, t in rows],
        }
    )
    pq.write_table(table, folder / "00000.parquet")


def test_reference_shards_keep_exactly_the_correct_pairs_and_share_reads_them(tmp_path):
    rows = [("a", "u1", "a red star"), ("b", "u2", "logo"), ("c", "u3", "a blue ring")]
    correct = {("u1", "a red star"), ("u3", "a blue ring"), ("u2", "a green cross")}
    _shard(tmp_path / "round0", rows)
    assert correctly_captioned_share(tmp_path / "round0", correct) == (3, 2 / 3)
    assert write_reference_shards(tmp_path / "round0", tmp_path / "ref", correct) == 2
    assert [s.key for s in iter_tar_samples(str(tmp_path / "ref" / "00000.tar"))] == ["a", "c"]
    assert correctly_captioned_share(tmp_path / "ref", correct) == (2, 1.0)


def test_standard_errors_are_binomial_and_mIoU_has_none(tmp_path):
    assert standard_error(0.5, 1100) == math.sqrt(0.25 / 1100) < 0.0151
    assert standard_error(0.3, 0) is None
    (tmp_path / "eval").mkdir()
    results = {
        "zeroshot": {"top1": 0.4, "samples": 100},
        "retrieval": {"text_to_image_R@1": 0.2},
        "dense": {"mIoU": 0.3},
    }
    (tmp_path / "eval" / "step_00000010.json").write_text(json.dumps({"results": results}))
    metrics = arm_metrics(latest_eval(tmp_path), {"retrieval": 400, "zeroshot": 100})
    assert metrics["zeroshot/top1"] == {"value": 0.4, "se": math.sqrt(0.24 / 100)}
    assert metrics["retrieval/text_to_image_R@1"]["se"] == math.sqrt(0.16 / 400)
    assert metrics["dense/mIoU"]["se"] is None
    arm = {"samples": 10, "correct_caption_share": 0.9, "metrics": metrics}
    table = arms_table({"round0": arm, "round1": arm})
    assert "0.400 ± 0.049" in table and "round1" in table


def _eval_report(run, zeroshot_hits, retrieval_hits=None):
    (run / "eval").mkdir(parents=True)
    results = {"zeroshot": {"top1": zeroshot_hits.count("1") / len(zeroshot_hits)}}
    results["zeroshot"]["top1/hits"] = zeroshot_hits
    if retrieval_hits is not None:
        results["retrieval"] = {"text_to_image_R@1/hits": retrieval_hits}
    (run / "eval" / "step_00000010.json").write_text(json.dumps({"results": results}))


def test_paired_difference_counts_only_the_trials_where_the_arms_disagree():
    a = np.array([1, 1, 1, 0, 1, 0, 1, 1], dtype=bool)
    b = np.array([1, 1, 0, 0, 1, 0, 0, 1], dtype=bool)
    entry = paired_difference(a, b)
    diff = a.astype(float) - b.astype(float)  # two +1s, six 0s
    assert entry["difference"] == pytest.approx(0.25)
    assert entry["se"] == pytest.approx(math.sqrt(diff.var() / 8))
    assert entry["z"] == pytest.approx(0.25 / entry["se"]) and entry["trials"] == 8
    # The same outcomes drawn independently would leave a larger standard error: the trials
    # both arms get right (or both miss) are what pairing removes.
    unpaired = math.sqrt(a.mean() * (1 - a.mean()) / 8 + b.mean() * (1 - b.mean()) / 8)
    assert entry["se"] < unpaired
    assert paired_difference(a, a) == {"difference": 0.0, "se": 0.0, "z": 0.0, "trials": 8}
    with pytest.raises(ValueError, match="same trials"):
        paired_difference(a, b[:4])


def test_paired_comparisons_read_each_runs_stored_outcomes(tmp_path):
    _eval_report(tmp_path / "r1", "1101", "0110")
    _eval_report(tmp_path / "r0", "1000", "0100")
    _eval_report(tmp_path / "ref", "1111")  # no retrieval outcomes: that metric is left out
    runs = {"round1": tmp_path / "r1", "round0": tmp_path / "r0", "reference": tmp_path / "ref"}
    results = {name: latest_eval(run) for name, run in runs.items()}
    comparisons = paired_comparisons(results, [("round1", "round0"), ("round1", "reference")])
    assert comparisons["round1 - round0"]["zeroshot/top1"]["difference"] == pytest.approx(0.5)
    assert comparisons["round1 - round0"]["retrieval/text_to_image_R@1"][
        "difference"
    ] == pytest.approx(0.25)
    assert set(comparisons["round1 - reference"]) == {"zeroshot/top1"}
    assert comparisons["round1 - reference"]["zeroshot/top1"]["difference"] == pytest.approx(-0.25)
    table = comparisons_table(comparisons)
    assert "round1 - round0" in table and "+0.500" in table


def test_differences_over_seeds_pair_seed_k_with_seed_k_and_their_se_is_over_seeds():
    def results(zeroshot: float, recall: float | None = None) -> dict:
        out = {"zeroshot": {"top1": zeroshot}}
        if recall is not None:
            out["retrieval"] = {"text_to_image_R@1": recall}
        return out

    by_seed = {
        "round1": [results(0.30, 0.5), results(0.28, 0.4), results(0.26)],
        "round0": [results(0.20, 0.3), results(0.24, 0.3), results(0.22)],
    }
    got = seed_comparisons(by_seed, [("round1", "round0")])["round1 - round0"]
    zeroshot = got["zeroshot/top1"]
    assert zeroshot["differences"] == pytest.approx([0.10, 0.04, 0.04])
    assert zeroshot["mean"] == pytest.approx(0.06)
    # sd of (0.10, 0.04, 0.04) with ddof 1 is sqrt(0.0012) = 0.03464; over sqrt(3) seeds:
    assert zeroshot["se"] == pytest.approx(0.02, abs=1e-6)
    assert zeroshot["seeds"] == 3
    # A metric only two seeds report is compared over those two.
    assert got["retrieval/text_to_image_R@1"]["differences"] == pytest.approx([0.2, 0.1])
    line = seed_comparisons_table({"round1 - round0": got}).splitlines()[0]
    assert "+0.060 ± 0.020" in line and "+0.100 / +0.040 / +0.040" in line
    # One seed: no spread to measure.
    one = seed_comparisons({"a": [results(0.3)], "b": [results(0.2)]}, [("a", "b")])
    assert one["a - b"]["zeroshot/top1"]["se"] is None
