"""Dashboard endpoints on a synthetic 10M-row pool, against reading the columns they aggregate.

Writes (once, reused afterwards) a pool of --rows sidecar rows in --shards Parquet files, with
only the columns the dashboard reads, plus balance/score/neardup curation files and one stats
record per shard. Then it serves the run and times each endpoint over HTTP, cold (first request,
which builds the cached aggregate) and warm (median of 3), against a reference measured in the
same run: pyarrow reading the projected columns those aggregates need (best of 2). A first
request must stay within 3 such reads, a page or a cached answer within 5% of one (at least
0.25 s); it exits 1 if one does not.

    .venv/bin/python benchmarks/dashboard_pool.py [--rows 10000000] [--shards 40] [--out bench-out/dashboard-pool]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dashboard.app import Dashboard
from curation.dashboard.server import make_server

# Real pool shards hold ~10k rows; these few big files are cut into row groups of that order, so a
# page reads about what it would read from a real shard.
PARQUET = {"row_group_size": 16_384, "compression": "zstd"}
INTERACTIVE_S = 0.25
FAILURES = np.array(["http_404", "timeout", "robots_disallowed", "not_an_image", "too_large"])


def write_pool(root: Path, rows: int, shards: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    per_shard = rows // shards
    pool = root / "pool"
    for stage in ("balance", "score", "neardup"):
        (pool / "curation" / stage).mkdir(parents=True, exist_ok=True)
    (root / "pool" / "_stats" / "download").mkdir(parents=True, exist_ok=True)
    for index in range(shards):
        shard = f"{index:05d}"
        start = index * per_shard
        ids = pa.array(np.arange(start, start + per_shard, dtype=np.int64))
        uid = pc.utf8_lpad(pc.cast(ids, pa.string()), 32, "0")
        failed = rng.random(per_shard) < 0.3
        status = np.where(failed, "failed_to_download", "success")
        reason = np.where(failed, FAILURES[rng.integers(0, len(FAILURES), per_shard)], None)
        hosts = pc.binary_join_element_wise(
            "h", pc.cast(pa.array(rng.zipf(1.5, per_shard) % 20_000), pa.string()), ".example", ""
        )
        width = rng.integers(64, 4096, per_shard).astype(np.int32)
        height = rng.integers(64, 4096, per_shard).astype(np.int32)
        key = pc.binary_join_element_wise(
            shard, pc.utf8_lpad(pc.cast(pa.array(np.arange(per_shard)), pa.string()), 4, "0"), ""
        )
        sidecar = pa.table(
            {
                "uid": uid,
                "key": key,
                "url": pc.binary_join_element_wise(
                    "http://", hosts, "/img/", pc.cast(ids, pa.string()), ".jpg", ""
                ),
                "text": pc.binary_join_element_wise(
                    "a synthetic caption number ", pc.cast(ids, pa.string()), ""
                ),
                "status": status,
                "error_message": pa.array(reason, pa.string()),
                "host": hosts,
                "width": np.minimum(width, 512),
                "height": np.minimum(height, 512),
                "original_width": width,
                "original_height": height,
            }
        )
        pq.write_table(sidecar, pool / f"{shard}.parquet", **PARQUET)
        ok = ~failed
        scores = rng.normal(0.25, 0.05, per_shard).astype(np.float32)
        pq.write_table(
            pa.table({"uid": uid, "keep_balance": ok & (rng.random(per_shard) < 0.6)}),
            pool / "curation" / "balance" / f"{shard}.parquet",
            **PARQUET,
        )
        pq.write_table(
            pa.table({"uid": uid, "clip_score_bench": scores, "keep_score": ok & (scores >= 0.28)}),
            pool / "curation" / "score" / f"{shard}.parquet",
            **PARQUET,
        )
        cluster = np.where(rng.random(per_shard) < 0.1, rng.integers(0, rows // 20, per_shard), -1)
        pq.write_table(
            pa.table(
                {
                    "uid": uid,
                    "dup_cluster": cluster,
                    "keep_dedup": rng.random(per_shard) > 0.05,
                    "contaminated": rng.random(per_shard) < 0.001,
                    "nearest_eval": pa.nulls(per_shard, pa.string()),
                }
            ),
            pool / "curation" / "neardup" / f"{shard}.parquet",
            **PARQUET,
        )
        record = {
            "stage": "download",
            "shard": shard,
            "rows_in": per_shard,
            "rows_out": int(ok.sum()),
            "drops": {},
            "errors": {},
            "wall_seconds": 60.0,
            "started_at": 0.0,
            "finished_at": 60.0,
            "extra": {},
            "timings": {},
            "error_examples": [],
        }
        (pool / "_stats" / "download" / f"{shard}.json").write_text(json.dumps(record))
    (root / "READY").write_text(
        json.dumps({"rows": per_shard * shards, "shards": shards, **PARQUET})
    )


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def read_columns(root: Path, columns_by_folder: dict[str, list[str]]) -> int:
    """Read these columns of every file (the least any aggregate over them must do)."""
    rows = 0
    for folder, columns in columns_by_folder.items():
        for path in sorted((root / folder).glob("[0-9]*.parquet")):
            rows += pq.read_table(path, columns=columns).num_rows
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--shards", type=int, default=40)
    parser.add_argument("--out", default="bench-out/dashboard-pool")
    args = parser.parse_args()
    root = Path(args.out)
    ready = root / "READY"
    layout = {"rows": args.rows // args.shards * args.shards, "shards": args.shards, **PARQUET}
    if not ready.exists() or json.loads(ready.read_text()) != layout:
        print(
            f"writing a {args.rows:,}-row synthetic pool in {args.shards} shards to {root} …",
            flush=True,
        )
        seconds, _ = timed(lambda: write_pool(root, args.rows, args.shards))
        print(f"  written in {seconds:.1f} s", flush=True)
    rows = json.loads(ready.read_text())["rows"]

    decision_columns = {
        "pool": ["uid", "status", "error_message"],
        "pool/curation/balance": ["uid", "keep_balance"],
        "pool/curation/score": ["uid", "keep_score"],
        "pool/curation/neardup": ["uid", "keep_dedup", "contaminated"],
    }
    crawl_columns = {
        "pool": ["status", "error_message", "host", "original_width", "original_height"]
    }
    # The machine is shared: a reference is the best of two reads, a warm request the median of three.
    ref_decisions = min(timed(lambda: read_columns(root, decision_columns))[0] for _ in range(2))
    ref_crawl = min(timed(lambda: read_columns(root, crawl_columns))[0] for _ in range(2))
    ref_full, _ = timed(lambda: read_columns(root, {"pool": None}))
    print(f"\npool: {rows:,} rows · {os.cpu_count()} CPUs")
    print(
        f"reference: read the decision columns {ref_decisions:.2f} s · the crawl columns {ref_crawl:.2f} s · "
        f"every sidecar column {ref_full:.2f} s"
    )

    dashboard = Dashboard(str(root))
    server = make_server(dashboard, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def get(path: str) -> dict:
        with urllib.request.urlopen(base + path, timeout=600) as response:
            return json.load(response)

    # (label, path, reference seconds, bound as a multiple of it): a first request may cost a few
    # reads of the columns it aggregates; a cached answer or a page a small fraction of one (or an
    # interactive INTERACTIVE_S, whichever is larger: small pools make the reference tiny).
    cold, warm = 3.0, 0.05
    requests = [
        ("overview", "/api/overview", ref_decisions, warm),
        (
            "samples page 0 (builds the decision index)",
            "/api/samples?decision=all&page=0",
            ref_decisions,
            cold,
        ),
        ("samples page 0", "/api/samples?decision=all&page=0", ref_decisions, warm),
        (
            "samples, a page in the middle",
            f"/api/samples?decision=all&page={rows // 48}",
            ref_decisions,
            warm,
        ),
        (
            "samples kept, last page",
            "/api/samples?decision=kept&page={last_kept}",
            ref_decisions,
            warm,
        ),
        (
            "samples 'download: timeout', page 100",
            "/api/samples?decision=download:%20timeout&page=100",
            ref_decisions,
            warm,
        ),
        ("crawl (cold)", "/api/crawl", ref_crawl, cold),
        ("crawl (cached)", "/api/crawl", ref_crawl, warm),
        ("score (cold)", "/api/score", None, None),
        ("score (cached)", "/api/score", ref_decisions, warm),
        ("neardup (cold)", "/api/neardup", None, None),
    ]
    print(f"\n{'endpoint':<46}{'seconds':>9}  {'÷ reference':>12}  allowed")
    last_kept = 0
    broken = []
    for label, path, reference, bound in requests:
        url = path.format(last_kept=last_kept)
        repeats = 1 if bound in (None, cold) else 3
        runs = [timed(lambda url=url: get(url)) for _ in range(repeats)]
        seconds, body = sorted(runs, key=lambda run: run[0])[repeats // 2]
        if "counts" in body:
            last_kept = max(0, -(-body["counts"].get("kept", 0) // 24) - 1)
        ratio = seconds / reference if reference else None
        verdict = ""
        if bound is not None:
            allowed = max(bound * reference, INTERACTIVE_S if bound == warm else 0.0)
            verdict = f"{allowed:.2f} s  " + ("ok" if seconds <= allowed else "OVER")
            if seconds > allowed:
                broken.append(label)
        print(
            f"{label:<46}{seconds:>9.3f}  {'' if ratio is None else f'{ratio:.3f}':>12}  {verdict}",
            flush=True,
        )
    index = dashboard.decision_index()
    print(
        f"\ndecision index: {sum(c.nbytes for c in index.codes) / 1e6:.1f} MB for {rows:,} rows, "
        f"{len(index.categories)} categories"
    )
    server.shutdown()
    if broken:
        raise SystemExit(f"over their bound: {', '.join(broken)}")


if __name__ == "__main__":
    main()
