"""Run a stage on a local multi-node Ray cluster and kill a worker node while it runs.

Used by test_fault_tolerance.py in a subprocess (it needs its own Ray cluster, apart from the test
session's). Prints one JSON line: the report and the output files' digests.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import ray
from ray.cluster_utils import Cluster

from curation.runner import ShardContext, ShardTask, completed_shards, run_stage


class SlowSquares:
    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        time.sleep(0.4)
        values = ctx.rng.integers(0, 1 << 30, size=100)
        ctx.stats.rows_in = ctx.stats.rows_out = len(values)
        ctx.stats.extra["node_id"] = ray.get_runtime_context().get_node_id()
        ctx.write_parquet(
            f"{task.shard_id}.parquet", pa.table({"v": values, "sq": values * values})
        )


def digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))
    }


def main(out: str, kill: bool) -> None:
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1"}
    )
    workers = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    tasks = [ShardTask(f"{i:05d}") for i in range(12)]

    def kill_one_worker_mid_stage() -> None:
        while len(completed_shards(out, "squares")) < 3:
            time.sleep(0.05)
        cluster.remove_node(workers[1], allow_graceful=False)

    killer = threading.Thread(target=kill_one_worker_mid_stage, daemon=True)
    if kill:
        killer.start()
    report = run_stage("squares", SlowSquares(), tasks, out, seed=11, max_retries=5, progress=False)
    if kill:
        killer.join(timeout=30)
    nodes_used = sorted({r["extra"]["node_id"] for r in report.completed})
    print(
        "RESULT "
        + json.dumps(
            {
                "ok": report.ok,
                "failed": report.failed,
                "killed_node": workers[1].node_id if kill else None,
                "nodes_used": nodes_used,
                "digests": digests(Path(out)),
            }
        )
    )
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], kill=sys.argv[2] == "kill")
