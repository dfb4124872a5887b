"""Why each pool sample was kept or dropped, and the paginated sample browser built on it.

A sample's decision is the first check it fails in pipeline order: download status, MetaCLIP
balancing, CLIP score, the NSFW head, decontamination, near-duplicate removal. A curation stage whose files are
missing, or a sample a stage did not see (a null keep flag), counts as "not applied". The decision
is kept as one small integer per pool row (10M rows ≈ 20 MB), so any page of any filter is found
with a cumulative count over shards and then read from one shard's row groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dashboard.pool import PoolTable

KEPT = "kept"
# (stage, column, value that means dropped, reason), in the order the pipeline applies them.
CHECKS: tuple[tuple[str, str, bool, str], ...] = (
    ("balance", "keep_balance", False, "balance: not sampled"),
    ("score", "keep_score", False, "score: not kept"),
    ("nsfw", "keep_nsfw", False, "nsfw: unsafe"),
    ("neardup", "contaminated", True, "neardup: near an eval image"),
    ("neardup", "keep_dedup", False, "neardup: duplicate"),
)
MAX_PAGE_SIZE = 200


@dataclass
class DecisionIndex:
    categories: list[str]  # category id → name; id 0 is "kept"
    shards: list[str]
    codes: list[np.ndarray]  # per shard: category id per pool row
    counts: np.ndarray  # [shard, category] row counts
    applied: list[str]  # curation stages whose files were present
    same_order: list[frozenset[str]]  # per shard: stages whose rows follow the pool's row order

    def totals(self) -> dict[str, int]:
        return {name: int(n) for name, n in zip(self.categories, self.counts.sum(axis=0)) if n}

    def matching(self, decision: str) -> np.ndarray:
        """Category ids a filter selects: all, kept, dropped, a stage ("score"), or one reason."""
        ids = np.arange(len(self.categories))
        if decision in ("", "all"):
            return ids
        if decision == KEPT:
            return ids[:1]
        if decision == "dropped":
            return ids[1:]
        chosen = [
            i
            for i, name in enumerate(self.categories)
            if name == decision or name.split(":", 1)[0] == decision
        ]
        if not chosen:
            raise ValueError(f"unknown decision filter {decision!r}; known: {self.categories}")
        return np.array(chosen)

    def locate(
        self, decision: str, start: int, size: int
    ) -> tuple[int, list[tuple[int, np.ndarray]]]:
        """Total rows matching `decision`, and (shard index, row positions) for rows [start, start+size)."""
        ids = self.matching(decision)
        per_shard = self.counts[:, ids].sum(axis=1)
        total = int(per_shard.sum())
        cumulative = np.concatenate([[0], np.cumsum(per_shard)])
        picks: list[tuple[int, np.ndarray]] = []
        end = min(start + size, total)
        shard = (
            int(np.searchsorted(cumulative, start, side="right") - 1)
            if start < total
            else len(per_shard)
        )
        while start < end and shard < len(per_shard):
            rows = np.flatnonzero(np.isin(self.codes[shard], ids))
            first = start - int(cumulative[shard])
            taken = rows[first : first + (end - start)]
            if len(taken):
                picks.append((shard, taken))
                start += len(taken)
            shard += 1
        return total, picks


def build_index(pool: PoolTable) -> DecisionIndex:
    applied = [stage for stage in dict.fromkeys(c[0] for c in CHECKS) if pool.has_stage(stage)]
    by_shard = pool.map_shards(lambda shard: _shard_reasons(pool, shard, applied))
    per_shard = list(by_shard.values())
    ids: dict[str, int] = {KEPT: 0}
    codes = []
    for names, local_codes, _ in per_shard:
        mapping = np.array([ids.setdefault(n, len(ids)) for n in names], dtype=np.int16)
        codes.append(mapping[local_codes] if len(names) else local_codes.astype(np.int16))
    categories = list(ids)
    counts = np.zeros((len(codes), len(categories)), dtype=np.int64)
    for row, shard_codes in enumerate(codes):
        counts[row] = np.bincount(shard_codes, minlength=len(categories))
    return DecisionIndex(
        categories,
        list(by_shard),  # the readable shards
        codes,
        counts,
        applied,
        [same_order for _, _, same_order in per_shard],
    )


def _shard_reasons(
    pool: PoolTable, shard: str, applied: list[str]
) -> tuple[list[str], np.ndarray, frozenset[str]]:
    """Local category names, one code per row (code 0 = kept), and the stages in pool row order."""
    sidecar = pool.read(pool.sidecar_url(shard), ["uid", "status", "error_message"])
    uids = sidecar.column("uid").combine_chunks()
    reason = pa.nulls(len(uids), pa.string())
    by_stage: dict[str, pa.Table] = {}
    same_order = set()
    for stage, column, dropped_value, label in reversed(CHECKS):
        if stage not in applied or shard not in pool.stage_shards(stage):
            continue
        if stage not in by_stage:
            columns = sorted({c[1] for c in CHECKS if c[0] == stage})
            by_stage[stage], in_order = pool.aligned(stage, shard, uids, columns)
            if in_order:
                same_order.add(stage)
        flag = by_stage[stage].column(column)
        hit = pc.fill_null(pc.equal(flag, pa.scalar(dropped_value)), False)
        reason = pc.if_else(hit, pa.scalar(label), reason)
    status = sidecar.column("status")
    failed = pc.fill_null(pc.not_equal(status, "success"), True)
    cause = pc.coalesce(sidecar.column("error_message"), status, pa.scalar("unknown"))
    reason = pc.if_else(failed, pc.binary_join_element_wise("download: ", cause, ""), reason)
    reason = pc.fill_null(reason, KEPT)
    encoded = pc.dictionary_encode(reason).combine_chunks()
    names = encoded.dictionary.to_pylist()
    return names, encoded.indices.to_numpy(zero_copy_only=False), frozenset(same_order)


SAMPLE_COLUMNS = ("uid", "key", "url", "text", "status", "error_message", "width", "height")


def sample_page(
    pool: PoolTable, index: DecisionIndex, decision: str, page: int, size: int
) -> dict[str, Any]:
    """One page of the sample browser: the filtered rows with text, decision and scores."""
    size = max(1, min(size, MAX_PAGE_SIZE))
    total, picks = index.locate(decision, max(page, 0) * size, size)
    samples = []
    for shard_pos, rows in picks:
        shard = index.shards[shard_pos]
        table = pool.read_rows(pool.sidecar_url(shard), rows, SAMPLE_COLUMNS)
        scores = _curation_details(
            pool, shard, rows, table.column("uid").to_pylist(), index.same_order[shard_pos]
        )
        for row, code in zip(table.to_pylist(), index.codes[shard_pos][rows]):
            samples.append(
                {
                    "shard": shard,
                    **row,
                    "decision": index.categories[int(code)],
                    "has_image": row["status"] == "success",
                    **scores.get(row["uid"], {}),
                }
            )
    return {
        "decision": decision,
        "page": page,
        "size": size,
        "total": total,
        "pages": -(-total // size),
        "samples": samples,
        "counts": index.totals(),
        "applied": index.applied,
    }


def _curation_details(
    pool: PoolTable, shard: str, rows: np.ndarray, uids: list[str], same_order: frozenset[str]
) -> dict[str, dict[str, Any]]:
    """Scores, MetaCLIP entries and dup cluster of these samples (pool `rows` with `uids`), from
    whichever stages ran. A stage file in pool row order is read at the same rows; any other is
    searched by uid."""
    details: dict[str, dict[str, Any]] = {uid: {} for uid in uids}
    for stage in ("balance", "score", "nsfw", "neardup"):
        if shard not in pool.stage_shards(stage):
            continue
        wanted = [
            n
            for n in pool.schema(pool.curation_url(stage, shard)).names
            if n == "metaclip_entries"
            or n.startswith("clip_score_")
            or n in ("dup_cluster", "nearest_eval", "nsfw_probability")
        ]
        url = pool.curation_url(stage, shard)
        found = (
            dict(zip(uids, pool.read_rows(url, rows, wanted).to_pylist()))
            if stage in same_order
            else pool.lookup(stage, shard, uids, wanted)
        )
        for uid, row in found.items():
            details[uid].update({k: v for k, v in row.items() if k != "uid"})
    return details
