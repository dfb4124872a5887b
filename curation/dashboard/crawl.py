"""The Crawl page: download success, failures by reason and by host, image sizes and shapes."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dashboard.pool import PoolTable
from curation.dashboard.stage_stats import StageStats

TOP_HOSTS = 15
SIDE_EDGES = [2**k for k in range(4, 15)]  # 16 px … 16384 px, log2 bins
ASPECT_EDGES = [round(2 ** (k / 2), 3) for k in range(-6, 7)]  # 1/8 … 8, half-octave bins


def crawl_page(pool: PoolTable, stats: StageStats) -> dict[str, Any]:
    download = stats.stage("download")
    page: dict[str, Any] = {"download_stats": download}
    if not pool.shards:
        return page
    parts = pool.map_shards(lambda shard: _shard_crawl(pool, shard)).values()
    status, reasons, hosts = Counter(), Counter(), {}
    sides = np.zeros(len(SIDE_EDGES) + 1, dtype=np.int64)
    aspects = np.zeros(len(ASPECT_EDGES) + 1, dtype=np.int64)
    for part in parts:
        status.update(part["status"])
        reasons.update(part["reasons"])
        for host, (rows, ok) in part["hosts"].items():
            seen = hosts.setdefault(host, [0, 0])
            seen[0] += rows
            seen[1] += ok
        sides += part["sides"]
        aspects += part["aspects"]
    total = sum(status.values())
    host_rows = [
        {"host": h, "rows": r, "success": s, "failed": r - s} for h, (r, s) in hosts.items()
    ]
    page.update(
        {
            "rows": total,
            "success": status.get("success", 0),
            "success_rate": status.get("success", 0) / total if total else 0.0,
            "status": dict(status.most_common()),
            "failures_by_reason": dict(reasons.most_common()),
            "hosts": len(hosts),
            "top_hosts": sorted(host_rows, key=lambda h: -h["rows"])[:TOP_HOSTS],
            "top_failing_hosts": [
                h for h in sorted(host_rows, key=lambda h: -h["failed"]) if h["failed"]
            ][:TOP_HOSTS],
            "side_histogram": _bins(SIDE_EDGES, sides),
            "aspect_histogram": _bins(ASPECT_EDGES, aspects),
        }
    )
    return page


def _shard_crawl(pool: PoolTable, shard: str) -> dict[str, Any]:
    table = pool.read(
        pool.sidecar_url(shard),
        ["status", "error_message", "host", "original_width", "original_height"],
        dictionary=("status", "error_message", "host"),
    )
    status_names, status = _codes(table.column("status"))
    reason_names, reason = _codes(table.column("error_message"))
    host_names, host = _codes(table.column("host"))
    ok = status == (status_names.index("success") if "success" in status_names else -1)
    failed_with_reason = ~ok & (reason < len(reason_names) - 1)  # the last code is "no value"
    reasons = Counter(_count(reason_names, reason[failed_with_reason]))
    reasons.update(_count(status_names, status[~ok & ~failed_with_reason]))  # no reason: its status
    host_rows = np.bincount(host, minlength=len(host_names))
    host_ok = np.bincount(host, weights=ok, minlength=len(host_names)).astype(np.int64)
    width = table.column("original_width").to_numpy(zero_copy_only=False).astype(np.float64)[ok]
    height = table.column("original_height").to_numpy(zero_copy_only=False).astype(np.float64)[ok]
    valid = (width > 0) & (height > 0)
    return {
        "status": Counter(_count(status_names, status)),
        "reasons": reasons,
        "hosts": {h: (int(n), int(s)) for h, n, s in zip(host_names, host_rows, host_ok) if n},
        "sides": np.bincount(
            np.searchsorted(SIDE_EDGES, np.maximum(width, height)[valid], "right"),
            minlength=len(SIDE_EDGES) + 1,
        ),
        "aspects": np.bincount(
            np.searchsorted(ASPECT_EDGES, (width / height)[valid], "right"),
            minlength=len(ASPECT_EDGES) + 1,
        ),
    }


def _codes(column: pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
    """The distinct values of a string column and each row's index into them; a null is the
    extra last value "(none)"."""
    array = column.combine_chunks()
    if not pa.types.is_dictionary(array.type):
        array = pc.dictionary_encode(pc.cast(array, pa.string()))
    names = [str(v) for v in array.dictionary.to_pylist()] + ["(none)"]
    indices = pc.fill_null(array.indices, len(names) - 1).to_numpy(zero_copy_only=False)
    return names, indices.astype(np.int64)


def _count(names: list[str], codes: np.ndarray) -> dict[str, int]:
    counts = np.bincount(codes, minlength=len(names))
    return {name: int(n) for name, n in zip(names, counts) if n}


def _bins(edges: list[float], counts: np.ndarray) -> list[dict[str, Any]]:
    """Histogram bins [lo, hi) with their counts; the open ends are labelled < and ≥."""
    inner = [f"{lo:g}–{hi:g}" for lo, hi in itertools.pairwise(edges)]
    labels = [f"< {edges[0]:g}", *inner, f"≥ {edges[-1]:g}"]
    return [{"label": label, "count": int(n)} for label, n in zip(labels, counts)]
