"""The reduce side of near-dup: pairs and groups inside clusters, and exact sha256 copies.

`FindPairs` (one task per pack of leaf folders, up to max_cluster_rows rows, except a single
larger cluster that could not be split further) reads its clusters' rows from those folders,
finds inside each cluster the pairs at or above the threshold among each row's k nearest (faiss,
as the exact method does; pixel pairs also need agreeing aspect ratios), groups them with a
union-find and writes star edges to the group's kept row. `FindCopies` (one task per sha256 hash
partition, like `dedup`) links rows with the same sha256. Both write edges for groups.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import fsio
from curation.neardup.evalset import MatchRule
from curation.neardup.groups import star_edges, write_edges
from curation.neardup.partition import PIXEL, SHA_DIR, folder_files
from curation.neardup.rows import aspect_agrees, column_vectors, list_parquet, unit_rows
from curation.runner import ShardContext, ShardTask
from curation.score.neighbours import similar_pairs, union_find_roots


@dataclass(frozen=True)
class FindPairs:
    """One pack of leaf folders (task id SIGNAL-NNNNN, task.inputs the folders); every row in
    them belongs to a leaf cluster of that signal."""

    dims: tuple[tuple[str, int], ...]  # (signal, vector dim)
    rule: MatchRule
    partitions: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        signal = task.shard_id.rsplit("-", 1)[0]
        dim = dict(self.dims)[signal]
        files = folder_files(task.inputs)
        rows = pa.concat_tables([fsio.read_parquet(url) for url in files])
        rows = rows.sort_by([("cluster", "ascending"), ("key", "ascending")])
        ctx.stats.rows_in = rows.num_rows
        threshold = self.rule.pixel_threshold if signal == PIXEL else self.rule.threshold
        cluster = rows["cluster"].to_numpy()
        starts = np.flatnonzero(np.r_[True, cluster[1:] != cluster[:-1]]) if len(cluster) else []
        ends = np.r_[starts[1:], len(cluster)] if len(cluster) else []
        keys = rows["key"].to_pylist()
        aspect = rows["aspect"].to_numpy(zero_copy_only=False)
        group = np.full(rows.num_rows, -1, np.int64)
        pairs_found = largest = 0
        for start, end in zip(starts, ends):
            largest = max(largest, int(end - start))
            vectors = unit_rows(column_vectors(rows["vector"].slice(start, end - start), dim))
            with ctx.stats.timer("pairs"):
                pairs = similar_pairs(vectors, threshold, self.rule.index, self.rule.neighbours)
            if signal == PIXEL and len(pairs):
                local = aspect[start:end]
                pairs = pairs[
                    aspect_agrees(
                        local[pairs[:, 0]], local[pairs[:, 1]], self.rule.pixel_aspect_tolerance
                    )
                ]
            pairs_found += len(pairs)
            if len(pairs):
                roots = union_find_roots(int(end - start), pairs)
                sizes = np.bincount(roots, minlength=end - start)
                grouped = sizes[roots] > 1
                group[start:end][grouped] = start + roots[grouped]
        member = np.flatnonzero(group >= 0)
        src, dst = star_edges(group[member], [keys[i] for i in member])
        edges = write_edges(ctx, task.shard_id, rows, member[src], member[dst], self.partitions)
        ctx.stats.rows_out = int(len(member))
        ctx.stats.extra.update(
            {"pairs": pairs_found, "edges": edges, "clusters": len(starts), "largest": largest}
        )


@dataclass(frozen=True)
class FindCopies:
    """One sha256 partition (task id = the partition's name): identical stored JPEGs."""

    work: str
    partitions: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        files = list_parquet(fsio.join(self.work, SHA_DIR, task.shard_id))
        if not files:
            ctx.stats.extra.update({"pairs": 0, "edges": 0})
            return
        rows = pa.concat_tables([fsio.read_parquet(url) for url in files])
        rows = rows.sort_by([("sha256", "ascending"), ("key", "ascending")])
        ctx.stats.rows_in = rows.num_rows
        sha = rows["sha256"]
        codes = pc.dictionary_encode(sha).combine_chunks().indices.to_numpy(zero_copy_only=False)
        src, dst = star_edges(codes.astype(np.int64), rows["key"].to_pylist())
        edges = write_edges(ctx, f"sha-{task.shard_id}", rows, src, dst, self.partitions)
        ctx.stats.rows_out = len(np.unique(np.concatenate([src, dst]))) if len(src) else 0
        ctx.stats.extra.update({"pairs": int(len(src)), "edges": edges})
