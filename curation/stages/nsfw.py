"""`python -m curation nsfw`: drop unsafe images by an NSFW head on the scorer's embeddings.

    python -m curation nsfw --pool POOL --weights HEAD.safetensors [--threshold P]

Runs after `score` (it reads POOL/curation/score: the raw rows and {shard}.emb.npy). The head is a
small MLP (curation/nsfw/head.py gives the file format); fit one from labelled pool rows with
`python -m curation nsfw-fit`, or bring your own weights in that format. Each shard gets
OUT/{shard}.parquet (default OUT: POOL/curation/nsfw) with uid, nsfw_probability, keep_nsfw and
nsfw_reason (why a row was dropped; null when kept); `shards --require nsfw` applies keep_nsfw.
The decision (head bytes, threshold, scorer) is recorded in OUT/plan.json and in every shard's
stats; a new head or threshold rewrites the shards made under the old one, nothing else.
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass

from curation import fsio
from curation.runner import StageReport, run_stage
from curation.score.reapply import decision_digest, invalidate_other_decisions
from curation.stages.common import ConfigError, RunOptions, add_run_options, cli_main
from curation.stages.score import pool_tasks, read_scorer_record

STAGE = "nsfw"
PLAN = "plan.json"


@dataclass(frozen=True)
class NsfwConfig:
    pool: str
    weights: str  # the head's safetensors file (curation/nsfw/head.py)
    out: str = ""  # default: POOL/curation/nsfw
    scores: str = ""  # score stage folder (default: POOL/curation/score)
    threshold: float | None = None  # drop P(unsafe) >= threshold (default: the head's own)

    def __post_init__(self) -> None:
        if not self.pool or not self.weights:
            raise ConfigError("nsfw: --pool and --weights are required")
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise ConfigError(f"nsfw: --threshold must be in (0, 1), got {self.threshold}")
        object.__setattr__(self, "out", self.out or fsio.join(self.pool, "curation", "nsfw"))
        object.__setattr__(self, "scores", self.scores or fsio.join(self.pool, "curation", "score"))


def run(config: NsfwConfig, options: RunOptions = RunOptions()) -> list[StageReport]:
    # torch (the head) is imported here, not with the CLI: every `python -m curation` command,
    # the drivers of a 10B run included, would otherwise carry it (~470 MB).
    from curation.nsfw.head import head_from_bytes
    from curation.nsfw.shards import NO_EMBEDDING, UNSAFE, ApplyNsfwHead

    scorer = read_scorer_record(config.scores, "nsfw")
    if not fsio.exists(config.weights):
        raise ConfigError(f"nsfw: no head weights at {config.weights}")
    weights = fsio.read_bytes(config.weights)
    try:
        spec = head_from_bytes(weights, config.weights).spec
    except ValueError as exc:
        raise ConfigError(f"nsfw: {exc}") from exc
    fitted_on = spec.scorer.get("model_name")
    if fitted_on and fitted_on != scorer.get("model_name"):
        raise ConfigError(
            f"nsfw: the head was fitted on {fitted_on} embeddings, the pool was scored with "
            f"{scorer.get('model_name')}"
        )
    threshold = spec.threshold if config.threshold is None else config.threshold
    plan = {
        "weights": config.weights,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "head": spec.to_record(),
        "threshold": threshold,
        "scorer": scorer,
    }
    digest = decision_digest(plan)
    fsio.write_json(fsio.join(config.out, PLAN), {**plan, "digest": digest})
    invalidate_other_decisions(config.out, STAGE, digest)
    report = run_stage(
        STAGE,
        ApplyNsfwHead(config.scores, weights, threshold, digest),
        pool_tasks(config.pool),
        config.out,
        **options.stage_args(),
    )
    dropped = {UNSAFE: 0, NO_EMBEDDING: 0}
    for record in report.completed:
        for reason in dropped:
            dropped[reason] += int(record.get("drops", {}).get(reason, 0))
    kept = sum(int(r.get("rows_out", 0)) for r in report.completed)
    report.summary.update(
        {"threshold": threshold, "weights": config.weights, "kept": kept, "dropped": dropped}
    )
    if scorer.get("random_init"):
        report.notes.append("WARNING: the pool's scorer is randomly initialised")
    report.notes.append(
        f"nsfw: drop P(unsafe) >= {threshold:g}; in the {len(report.completed)} shards written "
        f"now {kept:,} kept, {dropped[UNSAFE]:,} unsafe, {dropped[NO_EMBEDDING]:,} unembedded"
    )
    return [report]


def config_from_args(args: argparse.Namespace) -> NsfwConfig:
    return NsfwConfig(
        pool=args.pool,
        weights=args.weights,
        out=args.out or "",
        scores=args.scores or "",
        threshold=args.threshold,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "nsfw", help="mark unsafe images with an NSFW head on the scorer's embeddings"
    )
    parser.add_argument("--pool", required=True, help="pool folder (scored by `score`)")
    parser.add_argument(
        "--weights", required=True, help="NSFW head (.safetensors, see nsfw-fit / README)"
    )
    parser.add_argument("--out", default=None, help="default: POOL/curation/nsfw")
    parser.add_argument("--scores", default=None, help="default: POOL/curation/score")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="drop P(unsafe) >= X (default: the threshold stored in the head)",
    )
    add_run_options(parser)
    parser.set_defaults(func=cli_main(run, config_from_args))
