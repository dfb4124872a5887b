"""`python -m curation score`: CLIP score every pool sample, then decide keep_score globally.

Pass 1 ("score") is a run_stage over pool shards: each shard task decodes its JPEGs on a CPU and
feeds a pool of long-lived scoring actors (one GPU each when there are GPUs), so decoding and
inference overlap and every shard keeps the runner's done marker, retry and resume. This is the
actor-backed per-shard form of a Ray Data ActorPoolStrategy pipeline: the same actor pool and the
same overlap, but a shard's outputs are written by the task that owns the shard, not gathered in
the driver, and a killed run resumes shard by shard.
The driver then fixes the global rule (a threshold, or the top fraction of the whole pool; see
curation/score/filters.py) into POOL/curation/score/thresholds.json, and pass 2 ("score_filter") writes
{shard}.parquet with keep_score. Changing only the rule re-runs pass 2, not the model.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curation import fsio
from curation.runner import ShardTask, StageReport, completed_shards, ensure_ray, run_stage
from curation.score.embedder import (
    ClipEmbedder,
    plan_actor_pool,
    shard_inputs,
    start_embedder_actors,
)
from curation.score.filters import BasicRules, QuantileResult, top_fraction_threshold
from curation.score.model import (
    ScorerConfigError,
    ScorerSpec,
    flags_random,
    read_weights_metadata,
    save_random_weights,
)
from curation.score.pool import list_pool_shards
from curation.score.reapply import decision_digest, invalidate_other_decisions
from curation.score.shard_scoring import (
    ApplyScoreDecision,
    ScoreDecision,
    ScorerStartError,
    ScoreShard,
    get_from_actors,
    raw_scores_name,
)
from curation.stages.common import ConfigError, RunOptions, add_run_options, cli_main

SCORE_STAGE, FILTER_STAGE = "score", "score_filter"
QUANTILE_METHODS = ("auto", "exact", "histogram")
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


@dataclass(frozen=True)
class ScoreConfig:
    pool: str  # pool folder (NNNNN.tar + NNNNN.parquet)
    model: str  # open_clip architecture name
    weights: str  # local weights file (.safetensors / .pt)
    out: str = ""  # default: POOL/curation/score
    model_config: str | None = None  # open_clip model config JSON
    tag: str = ""  # score column suffix (default: from the model name)
    batch_size: int = 64
    actors: int | None = None  # scoring actors (default: planned from the cluster)
    threshold: float | None = None  # keep score >= threshold ...
    top_fraction: float | None = None  # ... or the top fraction of the whole pool
    quantile: str = "auto"  # top-fraction method: auto, exact or histogram
    basic: BasicRules | None = None  # DataComp's basic rules, or none
    # Cross-fitting: weights files instead of `weights`; fold i's rows (by a seeded uid hash,
    # shard_scoring.crossfit_folds) are scored by the models trained without them. File j
    # belongs to fold j % folds, so with several files per fold (an ensemble, e.g. scorers of
    # two seeds) a row's score is the mean of its fold's models' cosines.
    fold_weights: tuple[str, ...] = ()
    fold_seed: int = 0
    folds: int = 0  # 0: one file per fold (len(fold_weights))

    def __post_init__(self) -> None:
        if self.fold_weights and (self.weights or len(self.fold_weights) < 2):
            raise ConfigError("score: give --weights, or --fold-weights with 2 or more files")
        if self.fold_weights:
            folds = self.folds or len(self.fold_weights)
            if folds < 2 or len(self.fold_weights) % folds:
                raise ConfigError(
                    f"score: --folds {folds} must be at least 2 and divide the "
                    f"{len(self.fold_weights)} --fold-weights files (file J scores fold J % folds)"
                )
            object.__setattr__(self, "folds", folds)
        elif self.folds:
            raise ConfigError("score: --folds needs --fold-weights")
        object.__setattr__(self, "out", self.out or fsio.join(self.pool, "curation", "score"))
        object.__setattr__(self, "tag", self.tag or default_tag(self.model))
        if self.threshold is not None and self.top_fraction is not None:
            raise ConfigError("score: give --threshold or --top-fraction, not both")
        if self.top_fraction is not None and not 0 < self.top_fraction <= 1:
            raise ConfigError(f"score: --top-fraction must be in (0, 1], got {self.top_fraction}")
        if self.quantile not in QUANTILE_METHODS:
            raise ConfigError(f"score: --quantile must be one of {', '.join(QUANTILE_METHODS)}")
        if self.batch_size < 1 or (self.actors is not None and self.actors < 1):
            raise ConfigError("score: --batch-size and --actors must be at least 1")

    @property
    def models_per_fold(self) -> int:
        """Scorers of each fold's rows: 1, or the ensemble's size when cross-fitting."""
        return len(self.fold_weights) // self.folds if self.fold_weights else 1

    @property
    def specs(self) -> tuple[ScorerSpec, ...]:
        """The scorer, or one per fold when cross-fitting."""
        weights = self.fold_weights or (self.weights,)
        return tuple(ScorerSpec(self.model, w, self.model_config) for w in weights)

    @property
    def spec(self) -> ScorerSpec:
        return self.specs[0]


def read_scorer_record(scores: str, stage: str) -> dict[str, Any]:
    """The scorer record of a score folder, for a stage that reads its embeddings (`nsfw`,
    `nsfw-fit`): a missing record or a cross-fit folder (its embeddings are several models',
    no one space) is a ConfigError naming `stage`."""
    url = fsio.join(scores, SCORER_RECORD)
    if not fsio.exists(url):
        raise ConfigError(f"{stage}: {url} is missing; run `python -m curation score` first")
    record = fsio.read_json(url, expect=dict)
    if record.get("crossfit"):
        raise ConfigError(
            f"{stage}: {scores} holds cross-fit scores ({len(record['weights'])} models' "
            "embeddings); score the pool with one model (--weights) into another --out for it"
        )
    return record


def _check_scorer_record(out: str, record: dict[str, Any]) -> None:
    """Refuse to mix scores of two models (or tags) in one output folder."""
    url = fsio.join(out, SCORER_RECORD)
    if fsio.exists(url):
        previous = fsio.read_json(url, expect=dict)
        fields = ("model_name", "weights", "model_config", "tag", "crossfit")
        if any(previous.get(k) != record.get(k) for k in fields):
            raise fsio.PlanMismatchError(
                f"{out} holds scores from {[previous.get(k) for k in fields]}, not "
                f"{[record.get(k) for k in fields]}: use another --out or remove it"
            )
    else:
        fsio.write_json(url, record)


def score_pass(config: ScoreConfig, options: RunOptions = RunOptions()) -> StageReport:
    """Pass 1: embed and score every shard not scored yet (the model on Ray actors, or in this
    process without Ray). Weights or a config that cannot make the scorer raise ConfigError."""
    try:
        return _score_pass(config, options)
    except (ScorerConfigError, ScorerStartError) as exc:
        raise ConfigError(f"score: {exc}") from None


def _score_pass(config: ScoreConfig, options: RunOptions) -> StageReport:
    tasks = pool_tasks(config.pool)
    # once: the random flag and the config
    metadata = [read_weights_metadata(spec.weights) for spec in config.specs]
    random_init = any(flags_random(one) for one in metadata)
    record = {**config.spec.to_record(), "tag": config.tag, "random_init": random_init}
    if config.fold_weights:
        # The embeddings are several models': a head fitted on them (nsfw) would mix spaces.
        record["weights"] = list(config.fold_weights)
        record["crossfit"] = {
            "folds": config.folds,
            "models_per_fold": config.models_per_fold,
            "seed": config.fold_seed,
        }
    _check_scorer_record(config.out, record)
    if random_init:
        weights = ", ".join(spec.weights for spec in config.specs)
        print(RANDOM_WEIGHTS_WARNING.format(weights=weights), flush=True)
    done = completed_shards(config.out, SCORE_STAGE)
    if all(t.shard_id in done for t in tasks):
        # Nothing to score: do not start (and load the model into) any actor.
        return StageReport(SCORE_STAGE, config.out, skipped=[t.shard_id for t in tasks])
    folds = {
        "folds": config.folds or 1,
        "fold_seed": config.fold_seed,
        "models_per_fold": config.models_per_fold,
    }
    if not options.use_ray:
        embedder = ClipEmbedder(config.specs)
        model = embedder.describe()
        stage = ScoreShard(
            (embedder,), model["preprocess_cfg"], model["embed_dim"], config.batch_size, **folds
        )
        return run_stage(
            SCORE_STAGE,
            stage,
            tasks,
            config.out,
            seed=options.seed,
            use_ray=False,
            progress=options.progress,
        )
    import ray

    ensure_ray()
    resources = ray.cluster_resources()
    plan = plan_actor_pool(resources.get("CPU", 1), resources.get("GPU", 0), config.actors)
    print(f"score: {plan.describe()}", flush=True)
    handles = start_embedder_actors(config.specs, plan)
    try:
        # The shard tasks' inputs come from the config, not from a started actor: they read and
        # decode while the actors import torch and build the model (an actor that fails to build
        # fails the shards that call it, with its error).
        started = [handle.describe.remote() for handle in handles]
        preprocess_cfg, embed_dim = shard_inputs(config.spec, metadata[0])
        stage = ScoreShard(tuple(handles), preprocess_cfg, embed_dim, config.batch_size, **folds)
        report = run_stage(
            SCORE_STAGE,
            stage,
            tasks,
            config.out,
            seed=options.seed,
            num_cpus=1,
            max_in_flight=plan.decode_cpus,
            progress=options.progress,
        )
        if not report.ok:  # one clear error, not one per shard, when no actor could start
            get_from_actors(started)
        return report
    finally:
        for handle in handles:
            ray.kill(handle)


def _raw_score_chunks(out: str, tasks: list[ShardTask]):
    for task in tasks:
        table = fsio.read_parquet(fsio.join(out, raw_scores_name(task.shard_id)), ["clip_score"])
        yield table["clip_score"].to_numpy(zero_copy_only=False)


def _raw_score_count(out: str, tasks: list[ShardTask]) -> int:
    total = 0
    for task in tasks:
        fs, path = fsio.filesystem(fsio.join(out, raw_scores_name(task.shard_id)))
        with fs.open(path, "rb") as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def decide(config: ScoreConfig) -> tuple[ScoreDecision, QuantileResult | None]:
    """The global keep rule, recorded in OUT/thresholds.json."""
    tasks = pool_tasks(config.pool)
    threshold, quantile_result = config.threshold, None
    if config.top_fraction is not None:
        quantile_result = top_fraction_threshold(
            _raw_score_chunks(config.out, tasks),
            config.top_fraction,
            config.quantile,
            total=_raw_score_count(config.out, tasks),
        )
        threshold = quantile_result.threshold
    rule = {
        "tag": config.tag,
        "threshold": threshold,
        "top_fraction": config.top_fraction,
        "basic": config.basic.to_record() if config.basic else None,
    }
    digest = decision_digest(rule)
    fsio.write_json(
        fsio.join(config.out, THRESHOLDS_RECORD),
        {
            **rule,
            "digest": digest,
            "quantile": quantile_result.to_record() if quantile_result else None,
        },
    )
    return ScoreDecision(config.tag, threshold, config.basic, digest), quantile_result


def filter_pass(
    config: ScoreConfig, decision: ScoreDecision, options: RunOptions = RunOptions()
) -> StageReport:
    """Pass 2: write {shard}.parquet with keep_score; shards made under another rule are redone."""
    invalidate_other_decisions(config.out, FILTER_STAGE, decision.digest)
    return run_stage(
        FILTER_STAGE,
        ApplyScoreDecision(decision, config.out),
        pool_tasks(config.pool),
        config.out,
        num_cpus=1,
        **options.stage_args(),
    )


def run(config: ScoreConfig, options: RunOptions = RunOptions()) -> list[StageReport]:
    """Score the pool, fix the global rule, write keep_score; pass 2 runs only if pass 1 did not
    fail. The last report's summary holds the threshold and how many rows it kept."""
    scored = score_pass(config, options)
    if not scored.ok:
        return [scored]
    decision, quantile = decide(config)
    filtered = filter_pass(config, decision, options)
    if quantile is not None:
        filtered.notes.append(
            f"top {config.top_fraction:.2%} of {quantile.scores:,} scores: keep "
            f"clip_score_{config.tag} >= {quantile.threshold:.6f} ({quantile.method}; up to "
            f"{quantile.max_extra_kept} extra kept)"
        )
    kept = sum(r.get("rows_out", 0) for r in filtered.completed)
    if filtered.completed:
        filtered.notes.append(
            f"keep_score: {kept:,} kept in the {len(filtered.completed)} shards written now"
        )
    filtered.summary.update(
        {"tag": config.tag, "threshold": decision.threshold, "kept_in_shards_written_now": kept}
    )
    return [scored, filtered]


def config_from_args(args: argparse.Namespace) -> ScoreConfig:
    if not args.pool or not (args.weights or args.fold_weights):
        raise ConfigError(
            "--pool and --weights are required (or --fold-weights to cross-fit, or "
            "--init-random-weights PATH)"
        )
    basic = (
        BasicRules(args.min_side, args.max_aspect, args.min_caption_words, args.min_caption_chars)
        if args.basic_filter
        else None
    )
    return ScoreConfig(
        pool=args.pool,
        model=args.model,
        weights=args.weights or "",
        out=args.out or "",
        model_config=args.model_config,
        tag=args.tag or "",
        batch_size=args.batch_size,
        actors=args.actors,
        threshold=args.threshold,
        top_fraction=args.top_fraction,
        quantile=args.quantile,
        basic=basic,
        fold_weights=tuple(args.fold_weights or ()),
        fold_seed=args.fold_seed,
        folds=args.folds,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("score", help="CLIP-score the pool and decide keep_score")
    parser.add_argument("--pool", help="pool folder (NNNNN.tar + NNNNN.parquet)")
    parser.add_argument("--out", default=None, help="default: POOL/curation/score")
    parser.add_argument("--model", required=True, help="open_clip architecture name")
    parser.add_argument("--weights", help="local weights file (.safetensors / .pt)")
    parser.add_argument(
        "--fold-weights",
        nargs="+",
        metavar="WEIGHTS",
        help="cross-fitting, instead of --weights: one file per fold, model I trained without "
        "fold I's rows (folds by a seeded uid hash, --fold-seed), which it scores; with --folds "
        "K and more files, file J scores fold J %% K and a row's score is its models' mean",
    )
    parser.add_argument("--fold-seed", type=int, default=0, help="seed of the uid hash's folds")
    parser.add_argument(
        "--folds",
        type=int,
        default=0,
        help="folds of --fold-weights (default: one per file); several files per fold make an "
        "ensemble, e.g. --folds 2 --fold-weights A0 A1 B0 B1 for scorers of two seeds",
    )
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
        choices=QUANTILE_METHODS,
        default="auto",
        help=f"top-fraction method (auto: exact up to {200_000_000:,} scores)",
    )
    parser.add_argument("--basic-filter", action="store_true", help="apply DataComp's basic rules")
    defaults = BasicRules()
    parser.add_argument("--min-side", type=int, default=defaults.min_side)
    parser.add_argument("--max-aspect", type=float, default=defaults.max_aspect)
    parser.add_argument("--min-caption-words", type=int, default=defaults.min_caption_words)
    parser.add_argument("--min-caption-chars", type=int, default=defaults.min_caption_chars)
    add_run_options(parser)
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if not args.init_random_weights:
        return cli_main(run, config_from_args)(args)
    config = args.model_config or bundled_config(args.model)
    saved = save_random_weights(args.model, args.init_random_weights, config, args.seed)
    print(
        f"saved randomly initialised {args.model} ({saved['parameters']:,} parameters) to "
        f"{args.init_random_weights}"
    )
    return 0
