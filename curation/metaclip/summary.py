"""What balancing did, for the dashboard: head and tail of the entry distribution, before and after.

An entry is in the head when count(e) > t (its group's t with per-language thresholds): balancing
caps it near t. The tail (count <= t) is kept whole, because p(e) = 1 keeps every text matching it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

TOP_ENTRIES = 25


def entry_table(
    counts: pa.Table,
    kept: pa.Table,
    probabilities: Mapping[str, np.ndarray],
    entries: Sequence[str],
    with_lang: bool,
) -> pa.Table:
    """entry_counts.parquet: entry id, its text, matched count, p, and texts kept per entry."""
    kept_by_key = {
        (lang, entry): count
        for lang, entry, count in zip(
            kept.column("lang").to_pylist(),
            kept.column("entry").to_pylist(),
            kept.column("count").to_pylist(),
        )
    }
    langs = counts.column("lang").to_pylist()
    entry_ids = counts.column("entry").to_numpy()
    columns: dict[str, Any] = {
        "entry": pa.array(entry_ids, pa.int32()),
        "entry_text": pa.array([entries[i] for i in entry_ids], pa.string()),
        "count": counts.column("count"),
        "p": pa.array(
            [float(probabilities[lang][i]) for lang, i in zip(langs, entry_ids)], pa.float64()
        ),
        "kept": pa.array(
            [kept_by_key.get((lang, int(i)), 0) for lang, i in zip(langs, entry_ids)], pa.int64()
        ),
    }
    if with_lang:
        columns = {"lang": pa.array(langs, pa.string()), **columns}
    return pa.table(columns)


def summarize_balance(
    table: pa.Table,
    t: float,
    t_per_lang: Mapping[str, float] | None,
    eligible_rows: int,
    matched_rows: int,
    kept_rows: int,
) -> dict[str, Any]:
    """Head/tail numbers and the top entries before and after balancing."""
    counts = table.column("count").to_numpy()
    kept = table.column("kept").to_numpy()
    langs = table.column("lang").to_pylist() if "lang" in table.column_names else [""] * len(counts)
    thresholds = np.array([(t_per_lang or {}).get(lang, t) for lang in langs], dtype=np.float64)
    head = counts > thresholds
    total_matches = int(counts.sum())

    def top(values: np.ndarray) -> list[dict[str, Any]]:
        order = np.argsort(-values, kind="stable")[:TOP_ENTRIES]
        return [
            {
                "entry": table.column("entry_text")[int(i)].as_py(),
                "lang": langs[i],
                "count": int(counts[i]),
                "kept": int(kept[i]),
            }
            for i in order
        ]

    return {
        "t": t,
        "t_per_lang": dict(t_per_lang or {}),
        "eligible_rows": eligible_rows,
        "matched_rows": matched_rows,
        "kept_rows": kept_rows,
        "matched_fraction": matched_rows / eligible_rows if eligible_rows else 0.0,
        "kept_fraction": kept_rows / eligible_rows if eligible_rows else 0.0,
        "entries_matched": len(counts),
        "entries_above_t": int(head.sum()),
        "matches": total_matches,
        "head_match_share": float(counts[head].sum() / total_matches) if total_matches else 0.0,
        "head_kept_share": float(kept[head].sum() / kept.sum()) if kept.sum() else 0.0,
        "max_count_before": int(counts.max()) if len(counts) else 0,
        "max_count_after": int(kept.max()) if len(kept) else 0,
        "tail_kept_fraction": float(kept[~head].sum() / counts[~head].sum())
        if counts[~head].sum()
        else 1.0,
        "count_histogram": _log_histogram(counts),
        "top_before": top(counts),
        "top_after": top(kept),
    }


def _log_histogram(counts: np.ndarray) -> list[dict[str, int]]:
    """How many entries have a count in [10^k, 10^(k+1)) for each k: the long tail at a glance."""
    if not len(counts):
        return []
    decades = np.floor(np.log10(np.maximum(counts, 1))).astype(int)
    return [
        {"from": int(10**k), "to": int(10 ** (k + 1)), "entries": int((decades == k).sum())}
        for k in range(int(decades.max()) + 1)
    ]


def format_summary(summary: Mapping[str, Any], limit: int = 10) -> str:
    lines = [
        (
            f"balance: t={summary['t']:g}  eligible={summary['eligible_rows']}  "
            f"matched={summary['matched_rows']} ({summary['matched_fraction']:.1%})  "
            f"kept={summary['kept_rows']} ({summary['kept_fraction']:.1%})"
        ),
        (
            f"  entries matched={summary['entries_matched']}  above t={summary['entries_above_t']}  "
            f"head share of matches {summary['head_match_share']:.1%} -> of kept "
            f"{summary['head_kept_share']:.1%}  tail kept {summary['tail_kept_fraction']:.1%}"
        ),
        f"  {'entry':<24}{'before':>10}{'after':>10}",
    ]
    for row in summary["top_before"][:limit]:
        lines.append(f"  {row['entry'][:24]:<24}{row['count']:>10}{row['kept']:>10}")
    return "\n".join(lines)
