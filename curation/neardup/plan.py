"""The driver's plan of the near-dup passes: level-0 centroids from a bounded sample, regrouping
of large buckets, level-by-level splits of oversized clusters, and packing of clusters into pair
tasks. The driver holds centroids, one count and one folder name per cluster, never rows."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from curation import fsio
from curation.neardup.exact import read_shard_rows
from curation.neardup.kmeans import bounded_sample, centroid_count, train_centroids
from curation.neardup.partition import (
    COUNTS_DIR,
    EMBEDDING,
    PIXEL,
    Regroup,
    SignalPlan,
    SplitCluster,
    cluster_folder,
    level0_folder,
)
from curation.neardup.rows import unit_rows
from curation.runner import ShardContext, ShardTask, StageReport, marker_url, run_stage
from curation.stages.common import RunOptions

CENTROIDS = "centroids.npz"
# A sub-cluster that keeps this share of its parent's rows is not split again.
UNSPLITTABLE = 0.9


@dataclass(frozen=True)
class Leaf:
    signal: str
    cluster: int
    rows: int
    folder: str  # the bucket folder holding its rows (with other clusters' rows, maybe)


class Passes:
    """Runs the work passes in OUT/_work/PLAN and keeps their reports."""

    def __init__(self, options: RunOptions, work: str):
        self.options, self.work = options, work
        self.reports: list[StageReport] = []

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.reports)

    def run(self, stage, fn, tasks, per_task=None) -> StageReport:
        if not self.ok:
            return self.reports[-1]
        if per_task is not None:
            fn = PerTask({task.shard_id: f for task, f in per_task})
            tasks = [task for task, _ in per_task]
        report = run_stage(
            stage,
            fn,
            tasks,
            self.work,
            seed=self.options.seed,
            use_ray=self.options.use_ray,
            progress=self.options.progress,
        )
        self.reports.append(report)
        return report

    def extras(self, stage: str, tasks: list[ShardTask]) -> list[dict[str, Any]]:
        return [
            fsio.read_json(marker_url(self.work, stage, t.shard_id), expect=dict)["extra"]
            for t in tasks
        ]


@dataclass(frozen=True)
class PerTask:
    """A stage function that runs a different callable per task (e.g. one per cluster pack)."""

    functions: dict[str, Any]

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        self.functions[task.shard_id](task, ctx)


def level0_centroids(
    config: Any,
    options: RunOptions,
    tasks: list[ShardTask],
    score_dir: str,
    tag: str,
    work: str,
) -> tuple[tuple[SignalPlan, ...], int]:
    """Level-0 centroids per signal from a bounded sample (computed once per plan, then read)."""
    url = fsio.join(work, CENTROIDS)
    names = ([EMBEDDING] if config.use_embeddings else []) + (
        [PIXEL] if config.rule().use_pixels else []
    )
    if not fsio.exists(url):
        rng = np.random.default_rng(options.seed)
        picked = sorted(bounded_sample(rng, len(tasks), config.sample_shards).tolist())
        per_shard = math.ceil(config.sample_rows / len(picked))
        samples: dict[str, list[np.ndarray]] = defaultdict(list)
        seen_rows = 0
        for i in picked:
            rows = read_shard_rows(tasks[i], score_dir, tag)
            seen_rows += len(rows.uid)
            for name in names:
                source = unit_rows(rows.vectors if name == EMBEDDING else rows.pixels)
                eligible = (
                    np.flatnonzero(np.isfinite(rows.score))
                    if name == EMBEDDING
                    else np.flatnonzero(np.any(source != 0, axis=1))
                )
                take = eligible[bounded_sample(rng, len(eligible), per_shard)]
                samples[name].append(source[take].astype(np.float16))
        rows_estimate = math.ceil(seen_rows / len(picked) * len(tasks))
        arrays = {"rows_estimate": np.array(rows_estimate)}
        for name in names:
            sample = np.concatenate(samples[name]) if samples[name] else np.zeros((0, 1))
            if not len(sample):
                continue
            k = centroid_count(
                rows_estimate, config.border, config.max_cluster_rows // 2, len(sample)
            )
            arrays[name] = train_centroids(sample, k, options.seed)
        with fsio.open_atomic(url) as handle:
            np.savez(handle, **arrays)
    fs, path = fsio.filesystem(url)
    with fs.open(path, "rb") as handle:
        stored = dict(np.load(handle))
    plans = tuple(
        SignalPlan(name, stored[name], min(len(stored[name]), config.max_buckets))
        for name in names
        if name in stored
    )
    return plans, int(stored["rows_estimate"])


def _read_counts(work: str, pattern: str) -> dict[tuple[str, int], int]:
    counts: dict[tuple[str, int], int] = defaultdict(int)
    for url in fsio.expand(fsio.join(work, COUNTS_DIR, pattern)):
        table = fsio.read_parquet(url)
        for signal, cluster, rows in zip(
            table["signal"].to_pylist(), table["cluster"].to_pylist(), table["rows"].to_pylist()
        ):
            counts[(signal, cluster)] += rows
    return counts


def plan_leaves(
    config: Any, passes: Passes, work: str, signals: tuple[SignalPlan, ...]
) -> tuple[list[Leaf], dict[str, int]]:
    """Leaf clusters (<= max_cluster_rows rows unless they cannot be split), after splitting the
    others level by level; the driver holds one count and a folder name per cluster."""
    buckets = {plan.name: plan.buckets for plan in signals}
    next_id = {plan.name: len(plan.centroids) for plan in signals}
    counts = sorted(_read_counts(work, "L0/*.parquet").items())
    bucket_rows: dict[tuple[str, int], int] = defaultdict(int)
    for (signal, cluster), rows in counts:
        bucket_rows[(signal, cluster % buckets[signal])] += rows
    # Buckets larger than one pair task: regrouped once into a folder per cluster.
    regroup = sorted(b for b, rows in bucket_rows.items() if rows > config.max_cluster_rows)
    jobs = [
        (
            ShardTask(f"{signal}-{bucket:05d}", (fsio.join(work, level0_folder(signal, bucket)),)),
            Regroup(signal, config.batch_rows),
        )
        for signal, bucket in regroup
    ]
    if not passes.run("neardup_regroup", None, [], per_task=jobs).ok:
        return [], {"splits": 0, "oversized_leaves": 0, "regrouped_buckets": len(jobs)}
    regrouped = set(regroup)
    pending = [
        Leaf(
            signal,
            cluster,
            rows,
            fsio.join(work, cluster_folder(signal, cluster))
            if (signal, cluster % buckets[signal]) in regrouped
            else fsio.join(work, level0_folder(signal, cluster % buckets[signal])),
        )
        for (signal, cluster), rows in counts
    ]
    leaves: list[Leaf] = []
    stats = {"splits": 0, "oversized_leaves": 0, "regrouped_buckets": len(jobs)}
    for depth in range(config.max_depth + 1):
        big = [c for c in pending if c.rows > config.max_cluster_rows]
        leaves += [c for c in pending if c.rows <= config.max_cluster_rows]
        if not big:
            break
        if depth == config.max_depth:
            leaves += big
            stats["oversized_leaves"] += len(big)
            break
        jobs, plans = [], []
        for cluster in big:
            # Each row joins `border` sub-clusters: aim at max_cluster_rows / 2 rows in each.
            k = max(
                2 * config.border,
                math.ceil(cluster.rows * config.border / (config.max_cluster_rows // 2)),
            )
            k = min(k, config.sample_rows // 8, config.max_buckets)
            task = ShardTask(f"{cluster.signal}-{cluster.cluster}", (cluster.folder,))
            dim = _dim(signals, cluster.signal)
            split = SplitCluster(
                cluster.signal,
                cluster.cluster,
                cluster.rows,
                k,
                next_id[cluster.signal],
                dim,
                config.border,
                config.sample_rows,
                config.batch_rows,
            )
            next_id[cluster.signal] += k
            jobs.append((task, split))
            plans.append(split)
        stats["splits"] += len(jobs)
        if not passes.run(f"neardup_split{depth}", None, [], per_task=jobs).ok:
            return leaves, stats
        pending = []
        for split in plans:
            counts = _read_counts(work, f"S/{split.signal}-{split.parent}.parquet")
            for (signal, cluster), rows in sorted(counts.items()):
                leaf = Leaf(signal, cluster, rows, fsio.join(work, cluster_folder(signal, cluster)))
                # k-means could not split it: a dense blob, e.g. one duplicate group of more
                # than max_cluster_rows near-identical rows. It stays one (oversized) leaf.
                if rows >= UNSPLITTABLE * split.rows:
                    leaves.append(leaf)
                    stats["oversized_leaves"] += 1
                else:
                    pending.append(leaf)
    return leaves, stats


def _dim(signals: tuple[SignalPlan, ...], name: str) -> int:
    return next(p.centroids.shape[1] for p in signals if p.name == name)


def pack_leaves(config: Any, leaves: list[Leaf], signals: tuple[SignalPlan, ...]):
    """Whole leaf folders packed into pair tasks of <= max_cluster_rows rows. A folder is either
    a level-0 bucket that was small enough not to be regrouped, or one cluster's own folder, so
    a task reads exactly its rows, and its folder names are all it needs to know."""
    packs: list[ShardTask] = []
    for plan in signals:
        rows: dict[str, int] = defaultdict(int)
        for leaf in leaves:
            if leaf.signal == plan.name:
                rows[leaf.folder] += leaf.rows
        group: list[str] = []
        total = 0
        for folder in sorted(rows):
            if group and total + rows[folder] > config.max_cluster_rows:
                packs.append(ShardTask(f"{plan.name}-{len(packs):05d}", tuple(group)))
                group, total = [], 0
            group.append(folder)
            total += rows[folder]
        if group:
            packs.append(ShardTask(f"{plan.name}-{len(packs):05d}", tuple(group)))
    return packs
