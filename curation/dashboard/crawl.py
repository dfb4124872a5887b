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
SIDE_EDGES = [2 ** k for k in range(4, 15)]                  # 16 px … 16384 px, log2 bins
ASPECT_EDGES = [round(2 ** (k / 2), 3) for k in range(-6, 7)]  # 1/8 … 8, half-octave bins


def crawl_page(pool: PoolTable, stats: StageStats) -> dict[str, Any]:
    download = stats.stage("download")
    page: dict[str, Any] = {"download_stats": download}
    if not pool.shards:
        return page
    parts = pool.map_shards(lambda shard: _shard_crawl(pool, shard))
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
    host_rows = [{"host": h, "rows": r, "success": s, "failed": r - s} for h, (r, s) in hosts.items()]
    page.update({
        "rows": total,
        "success": status.get("success", 0),
        "success_rate": status.get("success", 0) / total if total else 0.0,
        "status": dict(status.most_common()),
        "failures_by_reason": dict(reasons.most_common()),
        "hosts": len(hosts),
        "top_hosts": sorted(host_rows, key=lambda h: -h["rows"])[:TOP_HOSTS],
        "top_failing_hosts": [h for h in sorted(host_rows, key=lambda h: -h["failed"])
                              if h["failed"]][:TOP_HOSTS],
        "side_histogram": _bins(SIDE_EDGES, sides),
        "aspect_histogram": _bins(ASPECT_EDGES, aspects),
    })
    return page


def _shard_crawl(pool: PoolTable, shard: str) -> dict[str, Any]:
    table = pool.read(pool.sidecar_url(shard), ["status", "error_message", "host",
                                                "original_width", "original_height"])
    status = pc.fill_null(table.column("status"), "unknown")
    failed = pc.not_equal(status, "success")
    reasons = pc.fill_null(pc.coalesce(table.column("error_message"), status), "unknown")
    hosts = pa.table({"host": pc.fill_null(table.column("host"), "(none)"),
                      "ok": pc.cast(pc.invert(failed), pa.int64())})
    by_host = hosts.group_by("host").aggregate([("ok", "count"), ("ok", "sum")])
    succeeded = table.filter(pc.invert(failed))
    width = succeeded.column("original_width").to_numpy(zero_copy_only=False).astype(np.float64)
    height = succeeded.column("original_height").to_numpy(zero_copy_only=False).astype(np.float64)
    valid = (width > 0) & (height > 0)
    return {
        "status": _value_counts(status),
        "reasons": _value_counts(reasons.filter(failed)),
        "hosts": {h: (n, s) for h, n, s in zip(by_host.column("host").to_pylist(),
                                              by_host.column("ok_count").to_pylist(),
                                              by_host.column("ok_sum").to_pylist())},
        "sides": np.bincount(np.searchsorted(SIDE_EDGES, np.maximum(width, height)[valid], "right"),
                             minlength=len(SIDE_EDGES) + 1),
        "aspects": np.bincount(np.searchsorted(ASPECT_EDGES, (width / height)[valid], "right"),
                               minlength=len(ASPECT_EDGES) + 1),
    }


def _value_counts(array: pa.ChunkedArray | pa.Array) -> Counter:
    counts = pc.value_counts(array)
    return Counter(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))


def _bins(edges: list[float], counts: np.ndarray) -> list[dict[str, Any]]:
    """Histogram bins [lo, hi) with their counts; the open ends are labelled < and ≥."""
    inner = [f"{lo:g}–{hi:g}" for lo, hi in itertools.pairwise(edges)]
    labels = [f"< {edges[0]:g}", *inner, f"≥ {edges[-1]:g}"]
    return [{"label": label, "count": int(n)} for label, n in zip(labels, counts)]
