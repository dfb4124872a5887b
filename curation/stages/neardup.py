"""`python -m curation neardup`: collapse duplicate images and remove eval-set contaminants,
SemDeDup-style, with memory per task bounded by settings and never by the pool.

Signals, as before: identical sha256 of the stored JPEG; cosine >= --threshold between CLIP image
embeddings (off for an untrained scorer); cosine >= --pixel-threshold between pixel signatures of
images whose aspect ratios agree. Each group keeps its highest-scoring row (ties: smallest uid);
a row that matches an eval image (cosine >= --eval-threshold, pixel signature or sha256) is
contaminated, and so is every member of its group.

Passes (each a `run_stage` pass with its own done markers, in OUT/_work/PLAN, so a killed run
resumes and ends with the same files; PLAN is the digest of the inputs and settings):
1. driver: k-means centroids per signal on a bounded sample (--sample-rows from at most
   --sample-shards shards), sized so a cluster holds ~max_cluster_rows / 2 rows;
2. `neardup_assign`, a task per pool shard: eval query against the broadcast eval index, sha256
   hash partitions, each row to its --border nearest centroids' bucket files (partition.py);
3. `neardup_split{d}`: a cluster above --max-cluster-rows is split again by k-means;
4. `neardup_pairs`, a task per pack of clusters (<= max_cluster_rows rows), and `neardup_sha`,
   a task per sha256 partition: pairs and groups, written as edges (pairs.py);
5. `neardup_groups{t}`: groups that span passes (a row linked by sha256 in one partition and by
   embedding in another) merged by label propagation over uid-hash partitions (groups.py);
6. `neardup`, a task per pool shard: the contract file OUT/{shard}.parquet (uid, dup_cluster,
   keep_dedup, contaminated, nearest_eval). dup_cluster is derived from the kept row's uid.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import fsio
from curation.neardup.evalset import EvalReference, MatchRule, embed_eval_sets
from curation.neardup.groups import (
    MSGS_DIR,
    RESULTS_DIR,
    InitPartition,
    Propagate,
    Scatter,
    part_name,
    pass_name,
)
from curation.neardup.pairs import FindCopies, FindPairs
from curation.neardup.partition import (
    EMBEDDING,
    PIXEL,
    ROWS_DIR,
    AssignShard,
)
from curation.neardup.plan import Passes, level0_centroids, pack_leaves, plan_leaves
from curation.neardup.rows import cluster_id, key_uid, list_parquet
from curation.runner import ShardContext, ShardTask, StageReport, marker_url, run_stage
from curation.score.model import ScorerSpec
from curation.score.reapply import DIGEST_KEY, decision_digest, invalidate_other_decisions
from curation.stages.common import ConfigError, RunOptions, add_run_options, cli_main
from curation.stages.score import SCORER_RECORD, pool_tasks

SUMMARY = "summary.json"
WORK_DIR = "_work"


@dataclass(frozen=True)
class NeardupConfig:
    pool: str
    out: str | None = None  # default: POOL/curation/neardup
    scores: str | None = None  # score stage folder (default: POOL/curation/score)
    eval_sets: tuple[str, ...] = ()
    threshold: float = 0.95
    eval_threshold: float = 0.95
    pixel_threshold: float = 0.97
    pixel_aspect_tolerance: float = 0.15
    index: str = "auto"
    neighbours: int = 16
    use_embeddings: bool | None = None  # None: on unless the scorer is untrained
    # Memory per task is bounded by these, never by the pool:
    max_cluster_rows: int = 10_000  # rows a pair-finding task holds; bigger clusters are split
    border: int = 2  # nearest centroids a row joins (recall across cluster borders)
    sample_rows: int = 100_000  # k-means training sample (driver and split tasks)
    sample_shards: int = 64  # shards the driver reads that sample from
    max_buckets: int = 64  # bucket files per signal a map task writes (clusters share them)
    batch_rows: int = 100_000  # rows a split task buffers before writing a chunk
    group_rows: int = 200_000  # rows per hash partition (sha256 groups, label propagation)
    max_depth: int = 3  # levels of re-splitting
    max_passes: int = 64  # label-propagation passes before giving up

    def __post_init__(self) -> None:
        if not self.pool:
            raise ConfigError("--pool is required")
        for name in ("threshold", "eval_threshold"):
            if not -1 <= getattr(self, name) <= 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a cosine in [-1, 1]")
        if self.index not in ("auto", "flat", "ivf", "hnsw"):
            raise ConfigError(f"--index {self.index!r}: use auto, flat, ivf or hnsw")
        for name in (
            "neighbours",
            "border",
            "sample_rows",
            "sample_shards",
            "max_buckets",
            "batch_rows",
            "group_rows",
            "max_passes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_cluster_rows < 2:
            raise ConfigError("--max-cluster-rows must be at least 2")
        if self.max_depth < 0:
            raise ConfigError("--max-depth must be at least 0")

    @property
    def out_dir(self) -> str:
        return self.out or fsio.join(self.pool, "curation", "neardup")

    @property
    def score_dir(self) -> str:
        return self.scores or fsio.join(self.pool, "curation", "score")

    def rule(self) -> MatchRule:
        return MatchRule(
            self.threshold,
            self.eval_threshold,
            self.pixel_threshold,
            self.index,
            self.neighbours,
            self.use_embeddings,
            self.pixel_aspect_tolerance,
        )


def run(config: NeardupConfig, options: RunOptions = RunOptions()) -> list[StageReport]:
    out, score_dir = config.out_dir, config.score_dir
    scorer_url = fsio.join(score_dir, SCORER_RECORD)
    if not fsio.exists(scorer_url):
        raise ConfigError(f"{scorer_url} is missing; run `python -m curation score` first")
    scorer = fsio.read_json(scorer_url, expect=dict)
    if config.use_embeddings is None:
        config = replace(config, use_embeddings=not scorer.get("random_init"))
    tasks = pool_tasks(config.pool)
    reference = None
    if config.eval_sets:
        spec = ScorerSpec(scorer["model_name"], scorer["weights"], scorer.get("model_config"))
        reference = embed_eval_sets(list(config.eval_sets), spec)
    digest = decision_digest(
        {
            "config": asdict(config),
            "shards": [t.shard_id for t in tasks],
            "scorer": scorer,
            "seed": options.seed,
            "eval": reference and [reference.names, reference.sha256],
        }
    )
    work = fsio.join(out, WORK_DIR, digest)
    _remove_other_plans(out, digest)
    passes = Passes(options, work)
    signals, rows_estimate = level0_centroids(
        config, options, tasks, score_dir, scorer["tag"], work
    )
    sha_buckets = partitions = max(1, math.ceil(rows_estimate / config.group_rows))

    passes.run(
        "neardup_assign",
        AssignShard(
            score_dir,
            scorer["tag"],
            config.rule(),
            reference,
            signals,
            config.border,
            sha_buckets,
        ),
        tasks,
    )
    leaves, splits = plan_leaves(config, passes, work, signals)
    dims = tuple((plan.name, int(plan.centroids.shape[1])) for plan in signals)
    passes.run(
        "neardup_pairs",
        FindPairs(dims, config.rule(), partitions),
        pack_leaves(config, leaves, signals),
    )
    sha_tasks = [ShardTask(part_name(b)) for b in range(sha_buckets)]
    passes.run("neardup_sha", FindCopies(work, partitions), sha_tasks)
    groups = [ShardTask(part_name(p)) for p in range(partitions)]
    passes.run("neardup_groups0", InitPartition(work, partitions), groups)
    final = 0
    while passes.ok and fsio.expand(
        fsio.join(work, MSGS_DIR, pass_name(final + 1), "*", "*.parquet")
    ):
        final += 1
        if final > config.max_passes:
            raise RuntimeError(
                f"neardup: groups did not converge in {config.max_passes} passes (--max-passes)"
            )
        passes.run(f"neardup_groups{final}", Propagate(work, partitions, final), groups)
    passes.run("neardup_scatter", Scatter(work, final), groups)
    if not passes.ok:
        return passes.reports

    fsio.write_json(fsio.join(out, SUMMARY), {"digest": digest, "complete": False})
    invalidate_other_decisions(out, "neardup", digest)
    report = run_stage(
        "neardup",
        WriteNeardupShard(work, digest),
        tasks,
        out,
        **options.stage_args(),
    )
    passes.reports.append(report)
    if report.ok:
        summary = _summary(passes, out, tasks, sha_tasks, groups, leaves, splits, final, reference)
        summary.update(
            {
                "config": asdict(config),
                "eval_sets": list(config.eval_sets),
                "scorer_random_init": scorer.get("random_init"),
                "rows_estimate": rows_estimate,
                "digest": digest,
            }
        )
        fsio.write_json(fsio.join(out, SUMMARY), summary)
        report.summary = summary
        report.notes = _notes(summary)
    return passes.reports


def _remove_other_plans(out: str, digest: str) -> None:
    """Work folders of other inputs or settings are stale: their decisions are being replaced."""
    root = fsio.join(out, WORK_DIR)
    fs, path = fsio.filesystem(root)
    if fs.exists(path):
        for entry in fs.ls(path, detail=False):
            if entry.rstrip("/").rsplit("/", 1)[-1] != digest:
                fs.rm(entry, recursive=True)


@dataclass(frozen=True)
class WriteNeardupShard:
    """The contract file of one pool shard from its rows and its rows' group labels."""

    work: str
    digest: str

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        rows = fsio.read_parquet(fsio.join(self.work, ROWS_DIR, f"{task.shard_id}.parquet"))
        files = list_parquet(fsio.join(self.work, RESULTS_DIR, task.shard_id))
        uids = rows["uid"].to_pylist()
        direct = rows["contaminated"].to_numpy(zero_copy_only=False)
        dup_cluster = np.full(len(uids), -1, np.int64)
        keep = np.ones(len(uids), dtype=bool)
        tainted = np.zeros(len(uids), dtype=bool)
        if files:
            labels = pa.concat_tables([fsio.read_parquet(url) for url in files])
            position = pc.index_in(rows["uid"], value_set=labels["node"])
            where = np.flatnonzero(pc.is_valid(position).to_numpy(zero_copy_only=False))
            at = position.to_numpy(zero_copy_only=False)[where].astype(np.int64)
            label = labels["label"].to_pylist()
            taint = labels["taint"].to_numpy(zero_copy_only=False)
            for row, j in zip(where, at):
                kept_uid = key_uid(label[j])
                dup_cluster[row] = cluster_id(kept_uid)
                keep[row] = kept_uid == uids[row]
                tainted[row] = taint[j]
        contaminated = direct | tainted
        table = pa.table(
            {
                "uid": rows["uid"],
                "dup_cluster": pa.array(dup_cluster, pa.int64()),
                "keep_dedup": pa.array(keep, pa.bool_()),
                "contaminated": pa.array(contaminated, pa.bool_()),
                "nearest_eval": rows["nearest_eval"],
            }
        )
        ctx.stats.rows_in = table.num_rows
        ctx.stats.drop("near_duplicate", int(np.count_nonzero(~keep)))
        ctx.stats.drop("eval_contaminant", int(contaminated.sum()))
        ctx.stats.rows_out = int(np.count_nonzero(keep & ~contaminated))
        ctx.stats.extra.update(
            {
                DIGEST_KEY: self.digest,
                "in_clusters": int(np.count_nonzero(dup_cluster >= 0)),
                "contaminated_direct": int(direct.sum()),
                "contaminated_via_cluster": int(np.count_nonzero(contaminated & ~direct)),
            }
        )
        ctx.write_parquet(f"{task.shard_id}.parquet", table)


def _summary(passes, out, tasks, sha_tasks, groups, leaves, splits, final, reference) -> dict:
    """The stage's numbers, from the passes' markers (so a resumed run reports the same)."""
    shards = [fsio.read_json(marker_url(out, "neardup", t.shard_id), expect=dict) for t in tasks]
    pairs = {"sha256": sum(e["pairs"] for e in passes.extras("neardup_sha", sha_tasks))}
    for signal in (EMBEDDING, PIXEL):
        pairs[signal] = sum(
            fsio.read_json(url, expect=dict)["extra"]["pairs"]
            for url in fsio.expand(
                fsio.join(passes.work, "_stats", "neardup_pairs", f"{signal}-*.json")
            )
        )
    scatter = passes.extras("neardup_scatter", groups)
    return {
        "samples": sum(s["rows_in"] for s in shards),
        "clusters": sum(e["groups"] for e in scatter),
        "duplicates_removed": sum(s["drops"].get("near_duplicate", 0) for s in shards),
        "pairs": pairs,  # pairs found inside clusters; a pair two clusters share counts twice
        "contaminated_direct": sum(s["extra"]["contaminated_direct"] for s in shards),
        "contaminated_via_cluster": sum(s["extra"]["contaminated_via_cluster"] for s in shards),
        "eval_images": len(reference.names) if reference else 0,
        "partition": {
            "leaves": len(leaves),
            "largest_leaf": max((c.rows for c in leaves), default=0),
            **splits,
            "group_partitions": len(groups),
            "group_passes": final + 1,
        },
    }


def _notes(summary: dict[str, Any]) -> list[str]:
    notes = [
        f"neardup: {summary['samples']:,} samples, {summary['clusters']:,} clusters, "
        f"{summary['duplicates_removed']:,} duplicates removed, "
        f"{summary['contaminated_direct'] + summary['contaminated_via_cluster']:,} contaminated "
        f"(of {summary['eval_images']:,} eval images)"
    ]
    if not summary["config"]["use_embeddings"]:
        notes.append(
            "neardup: CLIP embeddings NOT used (the scorer has random weights or --embeddings off); "
            "sha256 and pixel signatures decide alone"
        )
    if summary["partition"]["oversized_leaves"]:
        notes.append(
            f"neardup: {summary['partition']['oversized_leaves']} clusters stayed above "
            f"--max-cluster-rows (largest {summary['partition']['largest_leaf']:,} rows)"
        )
    return notes


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "neardup", help="near-duplicate clusters and eval decontamination"
    )
    parser.add_argument("--pool", required=True)
    parser.add_argument("--out", default=None, help="default: POOL/curation/neardup")
    parser.add_argument(
        "--scores", default=None, help="score stage folder (default: POOL/curation/score)"
    )
    defaults = NeardupConfig("-")
    parser.add_argument(
        "--threshold",
        type=float,
        default=defaults.threshold,
        help="cosine at or above which two pool images are near-duplicates",
    )
    parser.add_argument(
        "--eval-threshold",
        type=float,
        default=defaults.eval_threshold,
        help="cosine at or above which a pool image counts as an eval image",
    )
    parser.add_argument(
        "--pixel-threshold",
        type=float,
        default=defaults.pixel_threshold,
        help="pixel-signature cosine at or above which images match (>1: off)",
    )
    parser.add_argument(
        "--pixel-aspect-tolerance",
        type=float,
        default=defaults.pixel_aspect_tolerance,
        help="pixel matches need |log(aspect ratio a / b)| at most this",
    )
    parser.add_argument("--index", choices=("auto", "flat", "ivf", "hnsw"), default=defaults.index)
    parser.add_argument("--neighbours", type=int, default=defaults.neighbours)
    parser.add_argument(
        "--embeddings",
        choices=("auto", "on", "off"),
        default="auto",
        help="use CLIP embeddings as a signal (auto: not with a random-init scorer, "
        "whose embeddings put unrelated images above 0.99 cosine)",
    )
    parser.add_argument("--eval-sets", nargs="*", default=[], help="folders of eval images / tars")
    parser.add_argument("--world", default=None, help="mini Common Crawl folder: use WORLD/eval")
    for name, text in (
        ("max_cluster_rows", "rows a pair-finding task holds; larger clusters are split again"),
        ("border", "nearest centroids each row joins (recall across cluster borders)"),
        ("sample_rows", "k-means training sample rows"),
        ("sample_shards", "shards the k-means sample is read from"),
        ("max_buckets", "bucket files per signal each map task writes"),
        ("batch_rows", "rows a split task buffers before writing"),
        ("group_rows", "rows per hash partition of the sha256 and group passes"),
        ("max_depth", "levels of re-splitting an oversized cluster"),
    ):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name), help=text
        )
    add_run_options(parser)
    parser.set_defaults(func=cli_main(run, config_from_args))


def config_from_args(args: argparse.Namespace) -> NeardupConfig:
    eval_sets = list(args.eval_sets)
    if args.world:
        eval_sets.append(fsio.join(args.world, "eval"))
    return NeardupConfig(
        pool=args.pool,
        out=args.out,
        scores=args.scores,
        eval_sets=tuple(eval_sets),
        threshold=args.threshold,
        eval_threshold=args.eval_threshold,
        pixel_threshold=args.pixel_threshold,
        pixel_aspect_tolerance=args.pixel_aspect_tolerance,
        index=args.index,
        neighbours=args.neighbours,
        use_embeddings={"auto": None, "on": True, "off": False}[args.embeddings],
        max_cluster_rows=args.max_cluster_rows,
        border=args.border,
        sample_rows=args.sample_rows,
        sample_shards=args.sample_shards,
        max_buckets=args.max_buckets,
        batch_rows=args.batch_rows,
        group_rows=args.group_rows,
        max_depth=args.max_depth,
    )


__all__ = ["EvalReference", "MatchRule", "NeardupConfig", "config_from_args", "register", "run"]
