"""The MetaCLIP page: how concentrated the pool's concepts are before and after balancing.

Reads `POOL/curation/balance/entry_counts.parquet` (entry, count, p: matches per metadata entry in
the whole pool), the balance stage's `t` from its stats records, and the per-shard
`metaclip_entries` / `keep_balance` columns for the counts after balancing and entry search.
"""
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

CURVE_POINTS = 400
TOP_ENTRIES = 15
SEARCH_SAMPLES = 24
# Columns entry_counts.parquet may use for the entry's text (the balance stage chooses).
NAME_COLUMNS = ("text", "name", "entry_text", "term")


def entry_table(pool: PoolTable) -> pa.Table | None:
    """entry (id), count, and name (the entry's text when the file holds it), by count descending."""
    def load() -> pa.Table | None:
        url = fsio.join(pool.layout.curation("balance"), "entry_counts.parquet")
        if not fsio.exists(url):
            return None
        names = pool.schema(url).names
        name_column = next((c for c in NAME_COLUMNS if c in names), None)
        table = pool.read(url, ["entry", "count"] + ([name_column] if name_column else []))
        name = table.column(name_column) if name_column else pc.cast(table.column("entry"), pa.string())
        table = pa.table({"entry": table.column("entry"), "count": pc.cast(table.column("count"), pa.int64()),
                          "name": pc.cast(name, pa.string())})
        return table.sort_by([("count", "descending"), ("entry", "ascending")])
    return pool.memo.get("metaclip_entries", load)


def balance_threshold(stats: StageStats) -> float | None:
    """The balance stage's t: an `extra` value every shard reported the same."""
    stage = stats.stage("balance")
    if not stage:
        return None
    for key in ("t", "threshold", "entry_threshold"):
        value = stage["extra"].get(key, {}).get("value")
        if isinstance(value, (int, float)):
            return float(value)
    return None


def counts_after(pool: PoolTable) -> Counter:
    """Matches per entry among samples balancing kept."""
    def shard_counts(shard: str) -> Counter:
        table = pool.read(pool.curation_url("balance", shard), ["metaclip_entries", "keep_balance"])
        kept = table.filter(pc.fill_null(table.column("keep_balance"), False))
        counts = pc.value_counts(pc.list_flatten(kept.column("metaclip_entries")))
        return Counter(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))

    def load() -> Counter:
        total = Counter()
        for part in pool.map_shards(shard_counts, pool.stage_shards("balance")):
            total.update(part)
        return total
    return pool.memo.get("metaclip_after", load)


def metaclip_page(pool: PoolTable, stats: StageStats) -> dict[str, Any]:
    entries = entry_table(pool)
    if entries is None or not pool.has_stage("balance"):
        return {"missing": [missing("balance")]}
    t = balance_threshold(stats)
    after = counts_after(pool)
    counts = entries.column("count").to_numpy()
    ids = entries.column("entry").to_pylist()
    names = entries.column("name").to_pylist()
    after_counts = np.array([after.get(i, 0) for i in ids], dtype=np.int64)
    ranks = np.unique(np.geomspace(1, max(len(counts), 1), CURVE_POINTS).astype(np.int64))
    page: dict[str, Any] = {
        "t": t,
        "entries": len(ids),
        "matched_entries": int((counts > 0).sum()),
        "matches_before": int(counts.sum()),
        "matches_after": int(after_counts.sum()),
        "curve_before": [[int(r), int(counts[r - 1])] for r in ranks if counts[r - 1] > 0],
        "curve_after": _rank_curve(after_counts, ranks),
        "top_before": _top(ids, names, counts, after_counts, counts),
        "top_after": _top(ids, names, counts, after_counts, after_counts),
        "balance_stats": stats.stage("balance"),
    }
    if t is not None:
        head = counts > t
        page["head_entries"] = int(head.sum())
        page["head_share_before"] = _share(counts, head)
        page["head_share_after"] = _share(after_counts, head)
        page["tail_share_before"] = 1 - page["head_share_before"] if counts.sum() else 0.0
        page["tail_share_after"] = 1 - page["head_share_after"] if after_counts.sum() else 0.0
    return page


def _rank_curve(counts: np.ndarray, ranks: np.ndarray) -> list[list[int]]:
    ordered = np.sort(counts)[::-1]
    return [[int(r), int(ordered[r - 1])] for r in ranks if r <= len(ordered) and ordered[r - 1] > 0]


def _share(counts: np.ndarray, mask: np.ndarray) -> float:
    total = counts.sum()
    return float(counts[mask].sum() / total) if total else 0.0


def _top(ids: list, names: list, before: np.ndarray, after: np.ndarray, by: np.ndarray) -> list[dict]:
    order = np.argsort(-by, kind="stable")[:TOP_ENTRIES]
    return [{"entry": ids[i], "name": names[i], "before": int(before[i]), "after": int(after[i])}
            for i in order if by[i] > 0]


def search_entry(pool: PoolTable, query: str) -> dict[str, Any]:
    """The entry named `query` (exact, else the most frequent containing it) and a grid of its samples."""
    entries = entry_table(pool)
    if entries is None:
        return {"missing": [missing("balance")]}
    query = query.strip().lower()
    names = [str(n).lower() for n in entries.column("name").to_pylist()]
    position = next((i for i, n in enumerate(names) if n == query), None)
    if position is None:
        position = next((i for i, n in enumerate(names) if query and query in n), None)
    if position is None:
        return {"query": query, "entry": None, "samples": []}
    entry = entries.slice(position, 1).to_pylist()[0]
    refs: list[tuple[str, str]] = []
    flags: dict[tuple[str, str], dict] = {}
    for shard in pool.stage_shards("balance"):
        table = pool.read(pool.curation_url("balance", shard), ["uid", "metaclip_entries", "keep_balance"])
        lists = table.column("metaclip_entries").combine_chunks()
        hit = pc.is_in(pc.list_flatten(lists), value_set=pa.array([entry["entry"]], lists.type.value_type))
        rows = np.unique(pc.list_parent_indices(lists).to_numpy()[hit.to_numpy(zero_copy_only=False)])
        for row in rows[: SEARCH_SAMPLES - len(refs)]:
            uid = table.column("uid")[int(row)].as_py()
            refs.append((shard, uid))
            flags[(shard, uid)] = {"kept": bool(table.column("keep_balance")[int(row)].as_py())}
        if len(refs) >= SEARCH_SAMPLES:
            break
    return {"query": query, "entry": entry, "samples": pool.sample_cards(refs, flags)}
