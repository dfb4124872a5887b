"""The map side of near-dup: rows → cluster-bucket files.

`AssignShard` (one task per pool shard) reads the shard's score-stage outputs, queries its rows
against the broadcast eval index, hash-partitions its sha256 values, and writes every row, per
signal (CLIP embedding, pixel signature), to its `border` nearest level-0 centroids' bucket files.
`SplitCluster` (one task per cluster above max_cluster_rows) trains k-means on a bounded sample
of that cluster and re-partitions it the same way, reading one input file at a time and writing
a chunk every `batch_rows` rows. Each task also writes its per-cluster row counts, from which the
driver plans the next step (it holds counts, never rows).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import fsio
from curation.neardup.evalset import EvalReference, MatchRule, match_eval
from curation.neardup.exact import read_shard_rows
from curation.neardup.kmeans import assign, bounded_sample, train_centroids
from curation.neardup.rows import (
    column_vectors,
    keep_keys,
    list_parquet,
    unit_rows,
    vector_column,
)
from curation.runner import ShardContext, ShardTask, stable_bucket

EMBEDDING, PIXEL = "embedding", "pixel"
ROWS_DIR, SHA_DIR, CLUSTERS_DIR, COUNTS_DIR = "rows", "sha", "clusters", "counts"


def bucket_name(bucket: int) -> str:
    return f"{bucket:05d}"


def level0_folder(signal: str, bucket: int) -> str:
    return f"{CLUSTERS_DIR}/{signal}/L0/{bucket_name(bucket)}"


def cluster_folder(signal: str, cluster: int) -> str:
    """The folder of one cluster's own rows (after a regroup or a split)."""
    return f"{CLUSTERS_DIR}/{signal}/C{cluster}"


@dataclass(frozen=True)
class SignalPlan:
    """One signal's level-0 partition: centroids (broadcast with the task) and bucket files."""

    name: str
    centroids: np.ndarray
    buckets: int


def _cluster_rows(
    cluster: np.ndarray,
    uid: list[str],
    shard: list[str],
    key: list[str],
    taint: np.ndarray,
    aspect: np.ndarray,
    vectors: np.ndarray,
) -> pa.Table:
    return pa.table(
        {
            "cluster": pa.array(cluster, pa.int64()),
            "uid": pa.array(uid, pa.string()),
            "shard": pa.array(shard, pa.string()),
            "key": pa.array(key, pa.string()),
            "taint": pa.array(taint, pa.bool_()),
            "aspect": pa.array(aspect, pa.float64()),
            "vector": vector_column(vectors),
        }
    )


def spread(rows: pa.Table, nearest: np.ndarray, ids: np.ndarray) -> pa.Table:
    """Each row once per nearest centroid, its `cluster` set to that centroid's id in `ids`,
    sorted by (cluster, key) so the files do not depend on the order rows arrived in."""
    n, b = nearest.shape
    take = np.repeat(np.arange(n), b)
    table = rows.take(pa.array(take, pa.int64())).set_column(
        0, "cluster", pa.array(ids[nearest.reshape(-1)], pa.int64())
    )
    return table.sort_by([("cluster", "ascending"), ("key", "ascending")])


def write_by_bucket(
    ctx: ShardContext,
    table: pa.Table,
    bucket_of: Callable[[np.ndarray], np.ndarray],
    folder_of: Callable[[int], str],
    name: str,
) -> None:
    """Split `table` by bucket_of(cluster); write each non-empty part as folder_of(bucket)/name."""
    if table.num_rows == 0:
        return
    bucket = bucket_of(table["cluster"].to_numpy())
    for b in np.unique(bucket):
        part = table.filter(pa.array(bucket == b))
        ctx.write_parquet(f"{folder_of(int(b))}/{name}.parquet", part)


def write_counts(ctx: ShardContext, name: str, signal: list[str], tables: list[pa.Table]) -> None:
    signals, clusters, rows = [], [], []
    for sig, table in zip(signal, tables):
        if table.num_rows == 0:
            continue
        counts = pc.value_counts(table["cluster"])
        values = counts.field("values").to_numpy(zero_copy_only=False)
        order = np.argsort(values)
        clusters.append(values[order])
        rows.append(counts.field("counts").to_numpy(zero_copy_only=False)[order])
        signals += [sig] * len(order)
    ctx.write_parquet(
        f"{COUNTS_DIR}/{name}.parquet",
        pa.table(
            {
                "signal": pa.array(signals, pa.string()),
                "cluster": pa.array(np.concatenate(clusters) if clusters else [], pa.int64()),
                "rows": pa.array(np.concatenate(rows) if rows else [], pa.int64()),
            }
        ),
    )


@dataclass(frozen=True)
class AssignShard:
    score_dir: str
    tag: str
    rule: MatchRule
    reference: EvalReference | None
    signals: tuple[SignalPlan, ...]
    border: int
    sha_buckets: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        shard = read_shard_rows(task, self.score_dir, self.tag)
        n = len(shard.uid)
        ctx.stats.rows_in = ctx.stats.rows_out = n
        keys = keep_keys(shard.score, shard.uid)
        vectors = unit_rows(shard.vectors)
        signatures = unit_rows(shard.pixels)
        scored = np.flatnonzero(np.isfinite(shard.score))
        signed = np.flatnonzero(np.any(signatures != 0, axis=1))
        contaminated = np.zeros(n, dtype=bool)
        nearest_eval: list[str | None] = [None] * n
        if self.reference is not None:
            with ctx.stats.timer("eval_query"):
                contaminated, nearest_eval = match_eval(
                    self.reference,
                    self.rule,
                    shard.sha256,
                    vectors,
                    scored,
                    signatures,
                    signed,
                    shard.aspect,
                )
        ctx.stats.extra["contaminated_direct"] = int(contaminated.sum())
        ctx.write_parquet(
            f"{ROWS_DIR}/{task.shard_id}.parquet",
            pa.table(
                {
                    "uid": pa.array(shard.uid, pa.string()),
                    "contaminated": pa.array(contaminated, pa.bool_()),
                    "nearest_eval": pa.array(nearest_eval, pa.string()),
                }
            ),
        )
        self._write_sha(ctx, task.shard_id, shard.sha256, shard.uid, keys, contaminated)
        shards = [task.shard_id] * n
        spread_tables = []
        for plan in self.signals:
            rows = scored if plan.name == EMBEDDING else signed
            source = vectors if plan.name == EMBEDDING else signatures
            table = _cluster_rows(
                np.zeros(len(rows), np.int64),
                [shard.uid[i] for i in rows],
                [shards[i] for i in rows],
                [keys[i] for i in rows],
                contaminated[rows],
                shard.aspect[rows],
                source[rows],
            )
            with ctx.stats.timer(f"assign_{plan.name}"):
                nearest = assign(source[rows], plan.centroids, self.border)
            table = spread(table, nearest, np.arange(len(plan.centroids)))
            write_by_bucket(
                ctx,
                table,
                lambda clusters, buckets=plan.buckets: clusters % buckets,
                lambda b, name=plan.name: level0_folder(name, b),
                task.shard_id,
            )
            spread_tables.append(table)
        write_counts(ctx, f"L0/{task.shard_id}", [p.name for p in self.signals], spread_tables)

    def _write_sha(self, ctx, shard_id, sha256, uid, keys, contaminated) -> None:
        have = [i for i, sha in enumerate(sha256) if sha is not None]
        table = pa.table(
            {
                "sha256": pa.array([sha256[i] for i in have], pa.string()),
                "uid": pa.array([uid[i] for i in have], pa.string()),
                "shard": pa.array([shard_id] * len(have), pa.string()),
                "key": pa.array([keys[i] for i in have], pa.string()),
                "taint": pa.array(contaminated[have], pa.bool_()),
            }
        )
        bucket = np.array([stable_bucket(sha256[i], self.sha_buckets) for i in have], np.int64)
        for b in np.unique(bucket):
            part = table.filter(pa.array(bucket == b)).sort_by("key")
            ctx.write_parquet(f"{SHA_DIR}/{bucket_name(int(b))}/{shard_id}.parquet", part)


def folder_files(folders: tuple[str, ...]) -> list[str]:
    """The bucket files in `folders` (a task lists them itself: the driver holds no file lists)."""
    return [url for folder in folders for url in list_parquet(folder)]


def read_cluster_rows(files: list[str], clusters: list[int]) -> pa.Table:
    """The rows of `clusters` from bucket files that may hold other clusters too."""
    wanted = pa.array(sorted(clusters), pa.int64())
    parts = []
    for url in files:
        table = fsio.read_parquet(url)
        parts.append(table.filter(pc.is_in(table["cluster"], value_set=wanted)))
    if not parts:
        return _cluster_rows(
            np.zeros(0, np.int64), [], [], [], np.zeros(0, bool), np.zeros(0), np.zeros((0, 1))
        )
    return pa.concat_tables(parts)


class ChunkWriter:
    """Buffers spread rows and writes them, every `batch_rows` rows, as one chunk file per
    cluster in folder_of(cluster); counts rows per cluster as it goes."""

    def __init__(self, ctx: ShardContext, folder_of: Callable[[int], str], batch_rows: int):
        self.ctx, self.folder_of, self.batch_rows = ctx, folder_of, batch_rows
        self.buffered: list[pa.Table] = []
        self.counts: dict[int, int] = {}
        self.chunk = 0

    def add(self, table: pa.Table) -> None:
        self.buffered.append(table)
        if sum(t.num_rows for t in self.buffered) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        if not self.buffered:
            return
        table = pa.concat_tables(self.buffered).sort_by(
            [("cluster", "ascending"), ("key", "ascending")]
        )
        write_by_bucket(
            self.ctx, table, lambda clusters: clusters, self.folder_of, bucket_name(self.chunk)
        )
        values, counts = np.unique(table["cluster"].to_numpy(), return_counts=True)
        for cluster, rows in zip(values.tolist(), counts.tolist()):
            self.counts[cluster] = self.counts.get(cluster, 0) + rows
        self.chunk += 1
        self.buffered = []

    def write_counts(self, name: str, signal: str) -> None:
        clusters = sorted(self.counts)
        self.ctx.write_parquet(
            f"{COUNTS_DIR}/{name}.parquet",
            pa.table(
                {
                    "signal": pa.array([signal] * len(clusters), pa.string()),
                    "cluster": pa.array(clusters, pa.int64()),
                    "rows": pa.array([self.counts[c] for c in clusters], pa.int64()),
                }
            ),
        )


@dataclass(frozen=True)
class Regroup:
    """One level-0 bucket that holds more rows than a pair-finding task may: its rows rewritten
    into one folder per cluster (the second level of a two-level shuffle), read once, so the
    pair tasks read only their own clusters. task.inputs: the bucket folder."""

    signal: str
    batch_rows: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        writer = ChunkWriter(ctx, lambda c: cluster_folder(self.signal, c), self.batch_rows)
        for url in folder_files(task.inputs):
            table = fsio.read_parquet(url)
            ctx.stats.rows_in += table.num_rows
            writer.add(table)
        writer.flush()
        ctx.stats.rows_out = ctx.stats.rows_in


@dataclass(frozen=True)
class SplitCluster:
    """Re-partition one oversized cluster into `k` sub-clusters with ids base .. base + k - 1.
    task.inputs: the folders that hold the cluster's rows."""

    signal: str
    parent: int
    rows: int
    k: int
    base: int
    dim: int
    border: int
    sample_rows: int
    batch_rows: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        files = folder_files(task.inputs)
        sample = []
        for url in files:  # pass 1: a bounded sample, drawn per file in proportion to its rows
            table = read_cluster_rows([url], [self.parent])
            take = math.ceil(self.sample_rows * table.num_rows / max(1, self.rows))
            picked = bounded_sample(ctx.rng, table.num_rows, take)
            sample.append(column_vectors(table["vector"].take(pa.array(picked)), self.dim))
        centroids = train_centroids(np.concatenate(sample), self.k, ctx.seed)
        ids = self.base + np.arange(len(centroids))
        writer = ChunkWriter(ctx, lambda c: cluster_folder(self.signal, c), self.batch_rows)
        for url in files:  # pass 2: assign, a chunk file per sub-cluster every batch_rows rows
            table = read_cluster_rows([url], [self.parent])
            ctx.stats.rows_in += table.num_rows
            nearest = assign(column_vectors(table["vector"], self.dim), centroids, self.border)
            writer.add(spread(table, nearest, ids))
        writer.flush()
        ctx.stats.rows_out = sum(writer.counts.values())
        ctx.stats.extra["sub_clusters"] = len(centroids)
        writer.write_counts(f"S/{self.signal}-{self.parent}", self.signal)
