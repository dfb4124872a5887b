"""The CLIP score page: the score histogram with the threshold, and samples either side of it."""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np
import pyarrow.compute as pc

from curation import fsio
from curation.dashboard.layout import missing
from curation.dashboard.pool import PoolTable, UnreadableFileError
from curation.dashboard.stage_stats import StageStats

BINS = 50
GRID = 12
THRESHOLDS_RECORD = "thresholds.json"  # written by curation/stages/score.py


def score_column(pool: PoolTable) -> str | None:
    for shard in pool.stage_shards("score"):  # the first shard whose file can be read
        try:
            names = pool.schema(pool.curation_url("score", shard)).names
        except UnreadableFileError as error:
            pool.note_unreadable(shard, error)
            continue
        return next((n for n in names if n.startswith("clip_score_")), None)
    return None


def score_rule(pool: PoolTable) -> dict[str, Any]:
    """The score stage's global keep rule (threshold, top_fraction, basic rules), if recorded."""
    url = fsio.join(pool.layout.curation("score"), THRESHOLDS_RECORD)
    return fsio.read_json(url, expect=dict) if fsio.exists(url) else {}


def score_page(pool: PoolTable, stats: StageStats) -> dict[str, Any]:
    column = score_column(pool)
    if column is None:
        return {"missing": [missing("score")]}
    return pool.memo.get(("score_page", column), lambda: _build(pool, stats, column))


def _build(pool: PoolTable, stats: StageStats, column: str) -> dict[str, Any]:
    shards = pool.stage_shards("score")

    def read(shard: str) -> tuple[np.ndarray, np.ndarray]:
        table = pool.read(pool.curation_url("score", shard), [column, "keep_score"])
        scores = table.column(column).to_numpy(zero_copy_only=False).astype(np.float32)
        keep = pc.fill_null(table.column("keep_score"), False).to_numpy(zero_copy_only=False)
        return scores, keep

    by_shard = pool.map_shards(read, shards)
    shards, parts = list(by_shard), list(by_shard.values())
    valid = [s[np.isfinite(s)] for s, _ in parts]
    every = np.concatenate(valid) if valid else np.zeros(0, np.float32)
    if not len(every):
        return {"column": column, "rows": 0, "missing": [missing("score")]}
    rule = score_rule(pool)
    threshold = rule.get("threshold")
    threshold_source = f"{THRESHOLDS_RECORD}" + (
        f" (top {rule['top_fraction']:.1%} of the pool)" if rule.get("top_fraction") else ""
    )
    if threshold is None:
        kept = [s[k & np.isfinite(s)] for s, k in parts]
        kept_scores = np.concatenate(kept) if kept else np.zeros(0)
        threshold = float(kept_scores.min()) if len(kept_scores) else None
        threshold_source = "lowest kept score (the stats name no threshold)"
    lo, hi = float(every.min()), float(every.max())
    counts, edges = np.histogram(every, bins=BINS, range=(lo, hi if hi > lo else lo + 1e-6))
    page: dict[str, Any] = {
        "column": column,
        "rows": len(every),
        "threshold": threshold,
        "threshold_source": threshold_source,
        "kept": int(sum(k.sum() for _, k in parts)),
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
        "mean": float(every.mean()),
        "basic_rules": rule.get("basic"),
        "score_stats": stats.stage("score_filter") or stats.stage("score"),
    }
    if threshold is not None:
        page["above"] = int((every >= threshold).sum())
        page["below"] = int((every < threshold).sum())
        page["just_above"], page["just_below"] = _nearest(pool, shards, parts, threshold, column)
    return page


def _nearest(
    pool: PoolTable, shards: list[str], parts: list, threshold: float, column: str
) -> tuple[list[dict], list[dict]]:
    """The GRID samples closest to the threshold on each side (at or above; below)."""
    above: list[tuple[float, str, int]] = []
    below: list[tuple[float, str, int]] = []
    for shard, (scores, _) in zip(shards, parts):
        for side, mask, sign in ((above, scores >= threshold, 1), (below, scores < threshold, -1)):
            rows = np.flatnonzero(mask)
            distance = sign * (scores[rows] - threshold)
            if len(rows) > GRID:  # every row as close as the GRID-th closest (ties included)
                cutoff = np.partition(distance, GRID - 1)[GRID - 1]
                rows, distance = rows[distance <= cutoff], distance[distance <= cutoff]
            side.extend(zip(distance.tolist(), [shard] * len(rows), rows.tolist()))
    picked = [heapq.nsmallest(GRID, side) for side in (above, below)]
    picked_rows: dict[str, list[int]] = {}
    for _, shard, row in (pick for side in picked for pick in side):
        picked_rows.setdefault(shard, []).append(row)
    uid_at = {}
    for shard, rows in picked_rows.items():
        rows = np.unique(rows)
        uids = (
            pool.read_rows(pool.curation_url("score", shard), rows, ["uid"])
            .column("uid")
            .to_pylist()
        )
        uid_at.update({(shard, int(r)): uid for r, uid in zip(rows, uids)})
    chosen = []
    for picks in picked:
        refs, extra, hints = [], {}, {}
        for _, shard, row in picks:
            uid = uid_at[(shard, row)]
            refs.append((shard, uid))
            extra[(shard, uid)] = {"score": float(parts[shards.index(shard)][0][row])}
            hints[(shard, uid)] = row
        chosen.append(pool.sample_cards(refs, extra, row_hints=hints))
    return chosen[0], chosen[1]
