"""`python -m curation score`: CLIP score every pool sample, then decide keep_score globally.

Pass 1 ("score") is a run_stage over pool shards: each shard task decodes its JPEGs on a CPU and
feeds a pool of long-lived scoring actors (one GPU each when there are GPUs), so decoding and
inference overlap and every shard keeps the runner's done marker, retry and resume. This is the
actor-backed per-shard form of a Ray Data ActorPoolStrategy pipeline: the same actor pool and the
same overlap, but a shard's outputs are written by the task that owns the shard, not gathered in
the driver, and a killed run resumes shard by shard.
The driver then fixes the global rule (a threshold, or the top fraction of the whole pool; see
curation/filters.py) into POOL/curation/score/thresholds.json, and pass 2 ("score_filter") writes
{shard}.parquet with keep_score. Changing only the rule re-runs pass 2, not the model.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curation import fsio
from curation.filters import BasicRules, QuantileResult, top_fraction_threshold
from curation.runner import ShardTask, StageReport, completed_shards, ensure_ray, run_stage
from curation.score.embedder import plan_actor_pool, start_embedder_actors
from curation.score.model import ScorerSpec, save_random_weights, weights_are_random
from curation.score.pool import list_pool_shards
from curation.score.reapply import decision_digest, invalidate_other_decisions
from curation.score.shard_scoring import (
    ApplyScoreDecision,
    ScoreDecision,
    ScoreShard,
    raw_scores_name,
)

SCORER_RECORD = "scorer.json"
THRESHOLDS_RECORD = "thresholds.json"
RANDOM_WEIGHTS_WARNING = (
    "WARNING: scoring with RANDOMLY INITIALISED weights ({weights}): the scores "
    "carry no image-text meaning until a trained model replaces them"
)


BUNDLED_CONFIGS = Path(__file__).resolve().parents[1] / "score" / "configs"


def bundled_config(model_name: str) -> str | None:
    """Model configs shipped with the project (e.g. tiny-clip, a seconds-on-CPU architecture for
    demos and tests); a random-init file embeds its config, so only creating one needs this."""
    path = BUNDLED_CONFIGS / f"{model_name}.json"
    return str(path) if path.is_file() else None


def default_tag(model_name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", model_name).strip("_").lower()


def pool_tasks(pool: str) -> list[ShardTask]:
    return [ShardTask(s.shard_id, (s.tar, s.sidecar)) for s in list_pool_shards(pool)]


def _check_scorer_record(out: str, record: dict[str, Any]) -> None:
    """Refuse to mix scores of two models (or tags) in one output folder."""
    url = fsio.join(out, SCORER_RECORD)
    if fsio.exists(url):
        previous = fsio.read_json(url)
        fields = ("model_name", "weights", "model_config", "tag")
        if any(previous.get(k) != record.get(k) for k in fields):
            raise SystemExit(
                f"{out} holds scores from {[previous.get(k) for k in fields]}, not "
                f"{[record.get(k) for k in fields]}: use another --out or remove it"
            )
    else:
        fsio.write_json(url, record)


def score_pool(
    pool: str,
    out: str,
    spec: ScorerSpec,
    tag: str,
    batch_size: int = 64,
    actors: int | None = None,
    seed: int = 0,
) -> StageReport:
    """Pass 1: embed and score every shard not scored yet."""
    tasks = pool_tasks(pool)
    random_init = weights_are_random(spec.weights)
    _check_scorer_record(out, {**spec.to_record(), "tag": tag, "random_init": random_init})
    if random_init:
        print(RANDOM_WEIGHTS_WARNING.format(weights=spec.weights), flush=True)
    done = completed_shards(out, "score")
    if all(t.shard_id in done for t in tasks):
        # Nothing to score: do not start (and load the model into) any actor.
        return StageReport("score", out, skipped=[t.shard_id for t in tasks])
    import ray

    ensure_ray()
    resources = ray.cluster_resources()
    plan = plan_actor_pool(resources.get("CPU", 1), resources.get("GPU", 0), actors)
    print(f"score: {plan.describe()}", flush=True)
    handles = start_embedder_actors(spec, plan)
    try:
        model = ray.get(handles[0].describe.remote())
        stage = ScoreShard(tuple(handles), model["preprocess_cfg"], model["embed_dim"], batch_size)
        return run_stage(
            "score", stage, tasks, out, seed=seed, num_cpus=1, max_in_flight=plan.decode_cpus
        )
    finally:
        for handle in handles:
            ray.kill(handle)


def _raw_score_chunks(out: str, tasks: list[ShardTask]):
    for task in tasks:
        fs, path = fsio.filesystem(fsio.join(out, raw_scores_name(task.shard_id)))
        with fs.open(path, "rb") as handle:
            yield pq.read_table(handle, columns=["clip_score"])["clip_score"].to_numpy(
                zero_copy_only=False
            )


def _raw_score_count(out: str, tasks: list[ShardTask]) -> int:
    total = 0
    for task in tasks:
        fs, path = fsio.filesystem(fsio.join(out, raw_scores_name(task.shard_id)))
        with fs.open(path, "rb") as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def decide(
    pool: str,
    out: str,
    tag: str,
    threshold: float | None,
    top_fraction: float | None,
    quantile: str,
    basic: BasicRules | None,
) -> tuple[ScoreDecision, QuantileResult | None]:
    """The global keep rule, recorded in OUT/thresholds.json."""
    tasks = pool_tasks(pool)
    quantile_result = None
    if top_fraction is not None:
        quantile_result = top_fraction_threshold(
            _raw_score_chunks(out, tasks),
            top_fraction,
            quantile,
            total=_raw_score_count(out, tasks),
        )
        threshold = quantile_result.threshold
    rule = {
        "tag": tag,
        "threshold": threshold,
        "top_fraction": top_fraction,
        "basic": basic.to_record() if basic else None,
    }
    digest = decision_digest(rule)
    fsio.write_json(
        fsio.join(out, THRESHOLDS_RECORD),
        {
            **rule,
            "digest": digest,
            "quantile": quantile_result.to_record() if quantile_result else None,
        },
    )
    return ScoreDecision(tag, threshold, basic, digest), quantile_result


def apply_decision(pool: str, out: str, decision: ScoreDecision, seed: int = 0) -> StageReport:
    """Pass 2: write {shard}.parquet with keep_score; shards made under another rule are redone."""
    invalidate_other_decisions(out, "score_filter", decision.digest)
    return run_stage(
        "score_filter",
        ApplyScoreDecision(decision, out),
        pool_tasks(pool),
        out,
        seed=seed,
        num_cpus=1,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("score", help="CLIP-score the pool and decide keep_score")
    parser.add_argument("--pool", help="pool folder (NNNNN.tar + NNNNN.parquet)")
    parser.add_argument("--out", default=None, help="default: POOL/curation/score")
    parser.add_argument("--model", required=True, help="open_clip architecture name")
    parser.add_argument("--weights", help="local weights file (.safetensors / .pt)")
    parser.add_argument(
        "--model-config",
        default=None,
        help="open_clip model config JSON (for architectures open_clip lacks; "
        f"bundled: {', '.join(p.stem for p in sorted(BUNDLED_CONFIGS.glob('*.json')))})",
    )
    parser.add_argument(
        "--init-random-weights",
        metavar="PATH",
        default=None,
        help="only save a randomly initialised --model to PATH (flagged random)",
    )
    parser.add_argument("--tag", default=None, help="score column suffix (default: from --model)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--actors", type=int, default=None, help="scoring actors (default: planned)"
    )
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument("--threshold", type=float, default=None, help="keep score >= X")
    rule.add_argument(
        "--top-fraction",
        type=float,
        default=None,
        help="keep the top F of the whole pool by score (global quantile)",
    )
    parser.add_argument(
        "--quantile",
        choices=("auto", "exact", "histogram"),
        default="auto",
        help=f"top-fraction method (auto: exact up to {200_000_000:,} scores)",
    )
    parser.add_argument("--basic-filter", action="store_true", help="apply DataComp's basic rules")
    defaults = BasicRules()
    parser.add_argument("--min-side", type=int, default=defaults.min_side)
    parser.add_argument("--max-aspect", type=float, default=defaults.max_aspect)
    parser.add_argument("--min-caption-words", type=int, default=defaults.min_caption_words)
    parser.add_argument("--min-caption-chars", type=int, default=defaults.min_caption_chars)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.init_random_weights:
        config = args.model_config or bundled_config(args.model)
        saved = save_random_weights(args.model, args.init_random_weights, config, args.seed)
        print(
            f"saved randomly initialised {args.model} ({saved['parameters']:,} parameters) to "
            f"{args.init_random_weights}"
        )
        return 0
    if not args.pool or not args.weights:
        raise SystemExit("score: --pool and --weights are required (or --init-random-weights PATH)")
    out = args.out or fsio.join(args.pool, "curation", "score")
    tag = args.tag or default_tag(args.model)
    spec = ScorerSpec(args.model, args.weights, args.model_config)
    report = score_pool(args.pool, out, spec, tag, args.batch_size, args.actors, args.seed)
    print(report.describe())
    if not report.ok:
        return 1
    basic = (
        BasicRules(args.min_side, args.max_aspect, args.min_caption_words, args.min_caption_chars)
        if args.basic_filter
        else None
    )
    decision, quantile = decide(
        args.pool, out, tag, args.threshold, args.top_fraction, args.quantile, basic
    )
    if quantile is not None:
        print(
            f"top {args.top_fraction:.2%} of {quantile.scores:,} scores: keep clip_score_{tag} >= "
            f"{quantile.threshold:.6f} ({quantile.method}; up to {quantile.max_extra_kept} extra kept)"
        )
    report = apply_decision(args.pool, out, decision, args.seed)
    print(report.describe())
    kept = sum(r.get("rows_out", 0) for r in report.completed)
    if report.completed:
        print(f"keep_score: {kept:,} kept in the {len(report.completed)} shards written now")
    return 0 if report.ok else 1
