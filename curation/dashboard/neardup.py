"""The Near-dups page: the largest near-duplicate clusters with their members, and the samples
removed for being close to an evaluation image."""
from __future__ import annotations

from collections import Counter
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
    summary = fsio.read_json(summary_url) if fsio.exists(summary_url) else {}
    return {**page, "summary": summary, "neardup_stats": stats.stage("neardup")}


def _build(pool: PoolTable) -> dict[str, Any]:
    shards = pool.stage_shards("neardup")

    def summarize(shard: str) -> dict[str, Any]:
        table = pool.read(pool.curation_url("neardup", shard), ["dup_cluster", "keep_dedup", "contaminated"])
        clusters = pc.fill_null(table.column("dup_cluster"), -1)
        in_cluster = pc.greater_equal(clusters, 0)
        sizes = pc.value_counts(clusters.filter(in_cluster))
        contaminated = pc.fill_null(table.column("contaminated"), False)
        return {
            "rows": table.num_rows,
            "in_clusters": int(pc.sum(in_cluster).as_py() or 0),
            "dropped": int(pc.sum(pc.invert(pc.fill_null(table.column("keep_dedup"), True))).as_py() or 0),
            "contaminated": int(pc.sum(contaminated).as_py() or 0),
            "sizes": Counter(dict(zip(sizes.field("values").to_pylist(), sizes.field("counts").to_pylist()))),
        }

    parts = pool.map_shards(summarize, shards)
    sizes = Counter()
    for part in parts:
        sizes.update(part["sizes"])
    top = [cluster for cluster, _ in sizes.most_common(TOP_CLUSTERS)]
    members: dict[int, list[tuple[str, str]]] = {c: [] for c in top}
    flags: dict[tuple[str, str], dict] = {}
    contaminated_refs: list[tuple[str, str]] = []
    wanted = pa.array(top, pa.int64())
    for shard in shards:
        # Find the rows on the small columns first; read uids and names for those rows only.
        url = pool.curation_url("neardup", shard)
        flags_table = pool.read(url, ["dup_cluster", "contaminated"])
        clusters = pc.cast(pc.fill_null(flags_table.column("dup_cluster"), -1), pa.int64())
        in_top = pc.is_in(clusters, value_set=wanted).to_numpy(zero_copy_only=False)
        near = pc.fill_null(flags_table.column("contaminated"), False).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(in_top | near)
        if not len(rows):
            continue
        table = pool.read_rows(url, rows, COLUMNS)
        hits = table.filter(pc.is_in(pc.cast(table.column("dup_cluster"), pa.int64()), value_set=wanted))
        for row in hits.to_pylist():
            if len(members[row["dup_cluster"]]) < MEMBERS_SHOWN:
                members[row["dup_cluster"]].append((shard, row["uid"]))
                flags[(shard, row["uid"])] = {"kept": row["keep_dedup"]}
        if len(contaminated_refs) < CONTAMINATED_SHOWN:
            near_eval = table.filter(pc.fill_null(table.column("contaminated"), False))
            for row in near_eval.slice(0, CONTAMINATED_SHOWN - len(contaminated_refs)).to_pylist():
                contaminated_refs.append((shard, row["uid"]))
                flags[(shard, row["uid"])] = {"nearest_eval": row["nearest_eval"], "kept": False}
    cards = {(c["shard"], c["uid"]): c for c in pool.sample_cards(
        [ref for refs in members.values() for ref in refs] + contaminated_refs, flags)}
    return {
        "rows": sum(p["rows"] for p in parts),
        "clusters": len(sizes),
        "in_clusters": sum(p["in_clusters"] for p in parts),
        "dropped": sum(p["dropped"] for p in parts),
        "contaminated": sum(p["contaminated"] for p in parts),
        "size_histogram": _size_histogram(sizes),
        # The kept member (the cluster's representative) first.
        "top_clusters": [{"cluster": c, "size": sizes[c],
                          "members": sorted((cards[ref] for ref in members[c]), key=lambda card: not card["kept"])}
                         for c in top],
        "contaminated_samples": [cards[ref] for ref in contaminated_refs],
    }


def _size_histogram(sizes: Counter) -> list[dict[str, int]]:
    by_size = Counter(sizes.values())
    return [{"size": size, "clusters": n} for size, n in sorted(by_size.items())]
