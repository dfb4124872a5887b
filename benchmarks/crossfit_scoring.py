"""Does the round-0 encoder score its own training pairs fairly? In-sample against cross-fit.

`make demo`'s round 1 keeps the pool's top fraction by score. The round-0 encoder trained on
round 0's pairs ~20 times each (1,000 steps of 24 over ~1,600 pairs), so it can score a wrong
pair high because it learnt that pair, not because the caption fits. The demo therefore keeps
by cross-fit scores (`--scorer-folds 3`, its default): scorer i trains like round 0 without fold
i of round 0's pairs, and scores fold i. This reads a finished demo folder and breaks both down:

- in-sample: POOL/curation/score_round0 (the round-0 encoder's scores);
- cross-fit: POOL/curation/score (the fold scorers', `score --fold-weights`).

For each, the AUC on round 1's candidates (the chance that a correctly captioned pair scores
above a wrong one; 0.5 = no better than a coin), and at several top fractions of the pool: the
rows round 1 would keep (round 0's pairs that NSFW keeps, with a score in the pool's top
fraction), their correctly captioned share by the world's truth table, and the wrong ones by
caption kind. Then the memorisation itself: the
in-sample scorer's median pool percentile of each caption kind, on the pairs it trained on and
on those balance dropped before round 0. Writes DEMO/scoring_breakdown.json.

    .venv/bin/python benchmarks/crossfit_scoring.py --demo demo-run [--top 0.5,0.4,0.3]

Without a finished demo in --demo it runs `python -m curation demo --out DEMO` first (~12 min).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

from curation.demo_report import correct_pairs, parquet_rows
from curation.score.filters import exact_top_fraction


def raw_scores(folder: Path) -> dict[str, float]:
    table = ds.dataset(str(folder / "raw"), format="parquet").to_table(
        columns=["uid", "clip_score"]
    )
    return dict(zip(table["uid"].to_pylist(), table["clip_score"].to_numpy(zero_copy_only=False)))


def auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half: the Mann-Whitney U over the
    product of the counts, from the ranks of both together."""
    from scipy.stats import rankdata

    if not len(positives) or not len(negatives):
        return float("nan")
    ranks = rankdata(np.concatenate([positives, negatives]))
    u = ranks[: len(positives)].sum() - len(positives) * (len(positives) + 1) / 2
    return float(u / (len(positives) * len(negatives)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", type=Path, default=Path("demo-run"), help="a finished make demo")
    parser.add_argument("--top", default="0.5,0.4,0.3", help="top fractions of the pool to keep")
    args = parser.parse_args()
    demo, pool = args.demo, args.demo / "pool"
    if not (demo / "report.json").exists():
        print(f"{demo}: no finished demo there; running `python -m curation demo --out {demo}`")
        subprocess.run([sys.executable, "-m", "curation", "demo", "--out", str(demo)], check=True)

    if not (pool / "curation" / "score_round0").is_dir():
        raise SystemExit(f"{demo}: no in-sample scores (a demo run with --scorer-folds 1?)")
    in_sample = raw_scores(pool / "curation" / "score_round0")
    cross_fit = raw_scores(pool / "curation" / "score")
    uids = sorted(in_sample)
    scores = {
        "in-sample": np.array([in_sample[u] for u in uids]),
        "cross-fit": np.array([cross_fit[u] for u in uids]),
    }

    truth = ds.dataset(str(demo / "world" / "truth.parquet")).to_table(
        columns=["image_url", "text", "caption_kind"]
    )
    pairs = zip(truth["image_url"].to_pylist(), truth["text"].to_pylist())
    kind_of = dict(zip(pairs, truth["caption_kind"].to_pylist()))
    pool_pairs = {
        r["uid"]: (r["url"], r["text"]) for r in parquet_rows(pool, ["uid", "url", "text"])
    }
    kinds = np.array([kind_of.get(pool_pairs.get(u), "?") for u in uids], dtype=object)
    correct = correct_pairs(demo / "world")
    good = np.array([pool_pairs.get(u) in correct for u in uids])
    trained_uids = {r["uid"] for r in parquet_rows(demo / "train_shards_round0", ["uid"])}
    trained = np.array([u in trained_uids for u in uids])
    dropped = {
        r["uid"]
        for r in parquet_rows(pool / "curation" / "nsfw", ["uid", "keep_nsfw"])
        if not r["keep_nsfw"]
    }
    candidate = trained & ~np.isin(np.array(uids, dtype=object), list(dropped))

    report: dict = {
        "candidates": int(candidate.sum()),
        "candidates_correct_share": round(float(good[candidate].mean()), 4),
        "kept": {},
    }
    print(
        f"round 1's candidates (round 0's pairs that NSFW keeps): {candidate.sum()}, "
        f"correctly captioned {good[candidate].mean():.3f}"
    )
    report["auc"] = {}
    for name, score in scores.items():
        report["auc"][name] = round(auc(score[candidate & good], score[candidate & ~good]), 4)
        print(f"{name:11s} AUC, correct against wrong captions: {report['auc'][name]:.3f}")
        for top in (float(x) for x in args.top.split(",")):
            # The score stage's own rule: the pool's exact top fraction of finite scores.
            keep = candidate & (score >= exact_top_fraction([score], top).threshold)
            wrong = dict(zip(*np.unique(kinds[keep & ~good], return_counts=True)))
            row = {
                "kept": int(keep.sum()),
                "correct_share": round(float(good[keep].mean()), 4),
                "wrong_by_kind": {str(k): int(v) for k, v in wrong.items()},
            }
            report["kept"][f"{name} top {top:g}"] = row
            print(
                f"{name:11s} top {top:.0%}: keeps {row['kept']:4d}, correctly captioned "
                f"{row['correct_share']:.3f}, wrong: {row['wrong_by_kind']}"
            )
    # Memorisation, directly: where the in-sample scorer ranks each caption kind in the pool,
    # on the pairs it trained on and on those balance dropped before round 0.
    percentile = np.argsort(np.argsort(scores["in-sample"])) / max(len(uids) - 1, 1)
    report["in_sample_percentile"] = {}
    print("in-sample score percentile in the pool, median: trained on / not (rows)")
    for kind in sorted(set(kinds) - {"?"}):
        of_kind = kinds == kind
        medians = [
            (round(float(np.median(percentile[of_kind & seen])), 3), int((of_kind & seen).sum()))
            if (of_kind & seen).any()
            else (None, 0)
            for seen in (trained, ~trained)
        ]
        report["in_sample_percentile"][kind] = {"trained": medians[0], "not_trained": medians[1]}
        print(f"  {kind:14s} {medians[0]} / {medians[1]}")
    (demo / "scoring_breakdown.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
