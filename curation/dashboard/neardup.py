"""The Near-dups page: the largest near-duplicate clusters with their members, and the samples
removed for being close to an evaluation image."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import fsio
from curation.dashboard.layout import missing
from curation.dashboard.pool import PoolTable
from curation.dashboard.stage_stats import StageStats

SUMMARY = "summary.json"  # written by curation/stages/neardup.py
TOP_CLUSTERS = 12
MEMBERS_SHOWN = 8
CONTAMINATED_SHOWN = 12
COLUMNS = ["uid", "dup_cluster", "keep_dedup", "contaminated", "nearest_eval"]


def neardup_page(pool: PoolTable, stats: StageStats) -> dict[str, Any]:
    if not pool.has_stage("neardup"):
        return {"missing": [missing("neardup")]}
    page = pool.memo.get("neardup_page", lambda: _build(pool))
    summary_url = fsio.join(pool.layout.curation("neardup"), SUMMARY)
    summary = fsio.read_json(summary_url, expect=dict) if fsio.exists(summary_url) else {}
    return {**page, "summary": summary, "neardup_stats": stats.stage("neardup")}


def _build(pool: PoolTable) -> dict[str, Any]:
    by_shard = pool.map_shards(
        lambda shard: _shard_summary(pool, shard), pool.stage_shards("neardup")
    )
    shards, parts = list(by_shard), list(by_shard.values())
    # Cluster sizes over the whole pool: a cluster's members may sit in several shards.
    ids = np.concatenate([p["cluster_ids"] for p in parts] or [np.zeros(0, np.int64)])
    counts = np.concatenate([p["cluster_counts"] for p in parts] or [np.zeros(0, np.int64)])
    clusters, position = np.unique(ids, return_inverse=True)
    sizes = np.bincount(position, weights=counts, minlength=len(clusters)).astype(np.int64)
    largest = np.argsort(-sizes, kind="stable")[:TOP_CLUSTERS]
    top = {int(clusters[i]): int(sizes[i]) for i in largest}
    members, contaminated_refs, flags = _shown_samples(pool, shards, list(top))
    cards = {
        (c["shard"], c["uid"]): c
        for c in pool.sample_cards(
            [ref for refs in members.values() for ref in refs] + contaminated_refs, flags
        )
    }
    size_values, size_clusters = np.unique(sizes, return_counts=True)
    return {
        "rows": sum(p["rows"] for p in parts),
        "clusters": len(clusters),
        "in_clusters": int(sizes.sum()),
        "dropped": sum(p["dropped"] for p in parts),
        "contaminated": sum(p["contaminated"] for p in parts),
        "size_histogram": [
            {"size": int(s), "clusters": int(n)} for s, n in zip(size_values, size_clusters)
        ],
        # The kept member (the cluster's representative) first.
        "top_clusters": [
            {
                "cluster": c,
                "size": size,
                "members": sorted(
                    (cards[ref] for ref in members[c]), key=lambda card: not card["kept"]
                ),
            }
            for c, size in top.items()
        ],
        "contaminated_samples": [cards[ref] for ref in contaminated_refs],
    }


def _shard_summary(pool: PoolTable, shard: str) -> dict[str, Any]:
    table = pool.read(
        pool.curation_url("neardup", shard), ["dup_cluster", "keep_dedup", "contaminated"]
    )
    clusters = pc.cast(pc.fill_null(table.column("dup_cluster"), -1), pa.int64())
    sizes = pc.value_counts(clusters.filter(pc.greater_equal(clusters, 0)))
    return {
        "rows": table.num_rows,
        "cluster_ids": sizes.field("values").to_numpy(zero_copy_only=False),
        "cluster_counts": sizes.field("counts").to_numpy(zero_copy_only=False),
        "dropped": int(
            pc.sum(pc.invert(pc.fill_null(table.column("keep_dedup"), True))).as_py() or 0
        ),
        "contaminated": int(pc.sum(pc.fill_null(table.column("contaminated"), False)).as_py() or 0),
    }


def _shown_samples(pool: PoolTable, shards: list[str], top: list[int]):
    """Up to MEMBERS_SHOWN members of each top cluster and the first CONTAMINATED_SHOWN samples
    near an eval image, as (shard, uid) refs, with their keep flags. Rows are found on the small
    columns; uids and names are read for those rows only."""
    members: dict[int, list[tuple[str, str]]] = {c: [] for c in top}
    contaminated_refs: list[tuple[str, str]] = []
    flags: dict[tuple[str, str], dict] = {}
    wanted = pa.array(top, pa.int64())
    for shard in shards:
        url = pool.curation_url("neardup", shard)
        table = pool.read(url, ["dup_cluster", "contaminated"])
        clusters = pc.cast(pc.fill_null(table.column("dup_cluster"), -1), pa.int64())
        in_top = np.flatnonzero(pc.is_in(clusters, value_set=wanted).to_numpy(zero_copy_only=False))
        near = np.flatnonzero(
            pc.fill_null(table.column("contaminated"), False).to_numpy(zero_copy_only=False)
        )
        near = near[: CONTAMINATED_SHOWN - len(contaminated_refs)]
        rows = np.union1d(in_top, near)
        if not len(rows):
            continue
        for row in pool.read_rows(url, rows, COLUMNS).to_pylist():
            ref = (shard, row["uid"])
            if row["dup_cluster"] in members and len(members[row["dup_cluster"]]) < MEMBERS_SHOWN:
                members[row["dup_cluster"]].append(ref)
                flags[ref] = {"kept": row["keep_dedup"]}
            if row["contaminated"] and len(contaminated_refs) < CONTAMINATED_SHOWN:
                contaminated_refs.append(ref)
                flags[ref] = {
                    **flags.get(ref, {}),
                    "nearest_eval": row["nearest_eval"],
                    "kept": False,
                }
    return members, contaminated_refs, flags
