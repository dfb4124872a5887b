import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "score"))
from planted_pool import build_planted_pool, random_tiny_weights, score_planted_pool

from curation.cli import main
from curation.neardup.evalset import EvalReference, MatchRule
from curation.neardup.exact import PoolEmbeddings, decide_duplicates
from curation.neardup.rows import log_aspect
from curation.score.images import SIGNATURE_DIM
from curation.stages.neardup import NeardupConfig, run

SHARDS = ("00000", "00001", "00002")


@pytest.fixture(scope="module")
def deduped(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("neardup")
    planted = build_planted_pool(root, exact_dups=4, near_dups=5, contaminants=3)
    score_dir = score_planted_pool(planted, random_tiny_weights(root), use_ray=False)
    out = planted.pool / "curation" / "neardup"
    reports = run(NeardupConfig(str(planted.pool), str(out), score_dir, (str(planted.eval_dir),)))
    assert all(r.ok for r in reports)
    summary = reports[-1].summary
    decisions = pa.concat_tables([pq.read_table(out / f"{s}.parquet") for s in SHARDS]).to_pandas()
    merged = decisions.merge(planted.truth.to_pandas(), on="uid")
    return planted, out, summary, merged


def dup_removal_quality(merged) -> tuple[float, float]:
    """Precision: removed samples that have a kept copy in their truth group. Recall: truth
    duplicate groups that end with exactly one kept member."""
    removed = merged[~merged.keep_dedup]
    groups = merged[merged.dup_group.notna()].groupby("dup_group")
    kept_per_group = groups.keep_dedup.sum()
    correct = removed.dup_group.notna() & removed.dup_group.map(kept_per_group).eq(1)
    precision = float(correct.mean()) if len(removed) else 1.0
    recall = float((kept_per_group == 1).mean())
    return precision, recall


def test_planted_duplicates_and_near_duplicates_collapse_to_one_each(deduped):
    _planted, _out, summary, merged = deduped
    precision, recall = dup_removal_quality(merged)
    print(
        f"dup removal precision={precision:.3f} recall={recall:.3f} "
        f"(groups={merged.dup_group.nunique()}, removed={int((~merged.keep_dedup).sum())})"
    )
    assert precision == 1.0 and recall == 1.0
    assert summary["pairs"]["embedding"] == 0  # random-init scorer: embeddings are not trusted
    assert summary["pairs"]["sha256"] == 4
    in_clusters = merged[merged.dup_cluster >= 0]
    assert set(in_clusters.dup_group) == set(merged.dup_group.dropna())
    assert in_clusters.groupby("dup_group").dup_cluster.nunique().eq(1).all()


def test_eval_images_planted_in_the_pool_are_flagged_with_their_source(deduped):
    _planted, _out, _summary, merged = deduped
    flagged = merged[merged.contaminated]
    assert set(flagged.uid) == set(merged[merged.eval_name.notna()].uid)
    assert all(
        found.endswith(f"/{name}") for found, name in zip(flagged.nearest_eval, flagged.eval_name)
    )
    assert merged[~merged.contaminated].nearest_eval.isna().all()


def test_same_decision_skips_and_a_changed_one_rewrites(deduped):
    planted, out, _summary, _merged = deduped
    score_dir = str(planted.pool / "curation" / "score")
    again = run(NeardupConfig(str(planted.pool), str(out), score_dir, (str(planted.eval_dir),)))
    assert all(not r.completed for r in again)
    assert sorted(again[-1].skipped) == list(SHARDS)
    without_eval = run(NeardupConfig(str(planted.pool), str(out), score_dir))
    assert sorted(r["shard"] for r in without_eval[-1].completed) == list(SHARDS)
    summary = without_eval[-1].summary
    assert summary["contaminated_direct"] == 0
    code = main(["neardup", "--pool", str(planted.pool), "--world", str(planted.eval_dir.parent)])
    assert code == 0
    flagged = pa.concat_tables([pq.read_table(out / f"{s}.parquet") for s in SHARDS])[
        "contaminated"
    ]
    assert sum(flagged.to_pylist()) == 3


def synthetic_pool(vectors: np.ndarray, scores: list[float]) -> PoolEmbeddings:
    n = len(vectors)
    return PoolEmbeddings(
        shard=["00000"] * n,
        uid=[f"u{i:02d}" for i in range(n)],
        sha256=[None] * n,
        score=[np.array(scores, np.float32)],
        pixels=[np.zeros((n, SIGNATURE_DIM), np.float32)],
        vectors=[vectors.astype(np.float32)],
    )


def test_embedding_clusters_keep_the_highest_scoring_member():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 16))
    vectors = np.stack([base[0], base[0] + 0.01, base[1], base[2], base[2] + 0.01, base[2] - 0.01])
    pool = synthetic_pool(vectors, [0.1, 0.3, 0.2, 0.25, 0.25, 0.05])
    table, summary = decide_duplicates(pool, MatchRule(use_embeddings=True), None)
    assert table["keep_dedup"].to_pylist() == [False, True, True, True, False, False]
    # dup_cluster names the representative; the tie at 0.25 goes to the smaller uid.
    assert table["dup_cluster"].to_pylist() == [1, 1, -1, 3, 3, 3]
    assert summary["clusters"] == 2 and summary["duplicates_removed"] == 3
    table, _ = decide_duplicates(pool, MatchRule(use_embeddings=False), None)
    assert all(table["keep_dedup"].to_pylist())


def test_pixel_matches_need_agreeing_aspect_ratios():
    """A thumbnail squashes every picture to a square: the same signature from a 4:1 strip and a
    square photo is no duplicate, and no eval contaminant either."""
    rng = np.random.default_rng(1)
    signature = rng.normal(size=SIGNATURE_DIM).astype(np.float32)
    n = 3
    pool = PoolEmbeddings(
        shard=["00000"] * n,
        uid=[f"u{i}" for i in range(n)],
        sha256=[None] * n,
        score=[np.array([0.3, 0.2, 0.1], np.float32)],
        pixels=[np.stack([signature, signature * 1.01, signature])],
        vectors=[rng.normal(size=(n, 8)).astype(np.float32)],
        aspect=[log_aspect(np.array([256, 250, 256]), np.array([256, 256, 64]))],
    )
    table, summary = decide_duplicates(pool, MatchRule(use_embeddings=False), None)
    assert table["dup_cluster"].to_pylist() == [0, 0, -1]  # the strip (u2) stays apart
    assert summary["pairs"]["pixel"] == 1
    unit = signature / np.linalg.norm(signature)
    strip_eval = EvalReference(
        ["eval:strip"], ["x"], np.zeros((1, 8), np.float32), unit[None, :], np.log(np.array([4.0]))
    )
    table, _ = decide_duplicates(pool, MatchRule(use_embeddings=False), strip_eval)
    assert table["contaminated"].to_pylist() == [False, False, True]
    both = EvalReference(
        ["eval:strip", "eval:square"],
        ["x", "y"],
        np.zeros((2, 8), np.float32),
        np.stack([unit, unit]),
        np.log(np.array([4.0, 1.0])),
    )
    table, _ = decide_duplicates(pool, MatchRule(use_embeddings=False), both)
    assert table["contaminated"].to_pylist() == [True, True, True]
    assert table["nearest_eval"].to_pylist() == ["eval:square", "eval:square", "eval:strip"]
    loose = MatchRule(use_embeddings=False, pixel_aspect_tolerance=10.0)
    assert decide_duplicates(pool, loose, None)[0]["dup_cluster"].to_pylist() == [0, 0, 0]
