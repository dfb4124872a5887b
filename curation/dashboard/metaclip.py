"""The MetaCLIP page: how concentrated the pool's concepts are before and after balancing.

Reads what the balance stage writes beside its shards: `entry_counts.parquet` (entry id,
entry_text, count = matches in the pool, p, kept = matches among the samples it kept [, lang]) and
`balance_summary.json` (t); the per-shard `metaclip_entries` lists serve the entry search.
"""

from __future__ import annotations

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
ENTRY_COUNTS = "entry_counts.parquet"
SUMMARY = "balance_summary.json"


def entry_table(pool: PoolTable) -> pa.Table | None:
    """entry, name, count (before), kept (after), sorted by count descending; None if not balanced."""

    def load() -> pa.Table | None:
        url = fsio.join(pool.layout.curation("balance"), ENTRY_COUNTS)
        if not fsio.exists(url):
            return None
        table = pool.read(url, ["entry", "entry_text", "count", "kept", "lang"])
        name = pc.fill_null(table.column("entry_text"), pc.cast(table.column("entry"), pa.string()))
        if (
            table.column("lang").null_count < table.num_rows
        ):  # per-language t: one row per (lang, entry)
            name = pc.binary_join_element_wise(
                name, " [", pc.fill_null(table.column("lang"), "?"), "]", ""
            )
        table = pa.table(
            {
                "entry": table.column("entry"),
                "name": name,
                "lang": pc.cast(table.column("lang"), pa.string()),
                "count": pc.cast(table.column("count"), pa.int64()),
                "kept": pc.cast(pc.fill_null(table.column("kept"), 0), pa.int64()),
            }
        )
        return table.sort_by([("count", "descending"), ("entry", "ascending")])

    return pool.memo.get("metaclip_entries", load)


def balance_summary(pool: PoolTable) -> dict[str, Any]:
    url = fsio.join(pool.layout.curation("balance"), SUMMARY)
    return pool.memo.get(
        "balance_summary", lambda: fsio.read_json(url, expect=dict) if fsio.exists(url) else {}
    )


def metaclip_page(pool: PoolTable, stats: StageStats) -> dict[str, Any]:
    entries = entry_table(pool)
    if entries is None or not pool.has_stage("balance"):
        return {"missing": [missing("balance")]}
    summary = balance_summary(pool)
    t = summary.get("t")
    counts = entries.column("count").to_numpy()
    ids = entries.column("entry").to_pylist()
    names = entries.column("name").to_pylist()
    after_counts = entries.column("kept").to_numpy()
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
        "t_per_lang": summary.get("t_per_lang") or {},
        "kept_rows": summary.get("kept_rows"),
        "eligible_rows": summary.get("eligible_rows"),
        "balance_stats": stats.stage("balance"),
    }
    if t is not None:
        head = counts > _thresholds(entries, t, summary.get("t_per_lang"))
        page["head_entries"] = int(head.sum())
        page["head_share_before"] = _share(counts, head)
        page["head_share_after"] = _share(after_counts, head)
        page["tail_share_before"] = 1 - page["head_share_before"] if counts.sum() else 0.0
        page["tail_share_after"] = 1 - page["head_share_after"] if after_counts.sum() else 0.0
    return page


def _thresholds(entries: pa.Table, t: float, t_per_lang: dict[str, float] | None) -> np.ndarray:
    """Each row's t: its language's when the run balanced per language, else the global t."""
    if not t_per_lang:
        return np.full(entries.num_rows, float(t))
    return np.array([float(t_per_lang.get(lang, t)) for lang in entries.column("lang").to_pylist()])


def _rank_curve(counts: np.ndarray, ranks: np.ndarray) -> list[list[int]]:
    ordered = np.sort(counts)[::-1]
    return [
        [int(r), int(ordered[r - 1])] for r in ranks if r <= len(ordered) and ordered[r - 1] > 0
    ]


def _share(counts: np.ndarray, mask: np.ndarray) -> float:
    total = counts.sum()
    return float(counts[mask].sum() / total) if total else 0.0


def _top(
    ids: list, names: list, before: np.ndarray, after: np.ndarray, by: np.ndarray
) -> list[dict]:
    order = np.argsort(-by, kind="stable")[:TOP_ENTRIES]
    return [
        {"entry": ids[i], "name": names[i], "before": int(before[i]), "after": int(after[i])}
        for i in order
        if by[i] > 0
    ]


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
        table = pool.read(
            pool.curation_url("balance", shard), ["uid", "metaclip_entries", "keep_balance"]
        )
        lists = table.column("metaclip_entries").combine_chunks()
        hit = pc.is_in(
            pc.list_flatten(lists), value_set=pa.array([entry["entry"]], lists.type.value_type)
        )
        rows = np.unique(
            pc.list_parent_indices(lists).to_numpy()[hit.to_numpy(zero_copy_only=False)]
        )
        for row in rows[: SEARCH_SAMPLES - len(refs)]:
            uid = table.column("uid")[int(row)].as_py()
            refs.append((shard, uid))
            flags[(shard, uid)] = {"kept": bool(table.column("keep_balance")[int(row)].as_py())}
        if len(refs) >= SEARCH_SAMPLES:
            break
    return {"query": query, "entry": entry, "samples": pool.sample_cards(refs, flags)}
