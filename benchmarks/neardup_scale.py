"""Near-dup + shards at scale on a synthetic scored pool: memory, time, and quality vs exact.

    .venv/bin/python benchmarks/neardup_scale.py --rows 1000000 --out /tmp/ndscale [--skip-shards]

Writes a synthetic pool of N rows in the score stage's real output format (tests/curation/neardup/
synthetic_pool.py: 8x8 JPEG tars + sidecars, fp16 64-d embeddings and 432-d pixel signatures,
Zipf-sized planted duplicate groups spread over all shards; reused when DIR already holds the
same one), runs `neardup` in this process (the driver) and `shards` through its CLI in a
subprocess, and samples the RSS and open file descriptors of every process of the run (this
driver, the shards driver, their Ray workers; Ray's own daemons are reported apart) from /proc
every 0.25 s. Quality: on a subset pool of the first --subset-rows rows (the pool itself when it
is that small), the duplicate pairs (two rows in one group) of the distributed method against
those of the exact all-in-one method (curation/neardup/exact.py), and the kept sets. No eval
sets: the synthetic scorer cannot embed eval images. Writes DIR/result.json and prints RESULT {...}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "curation" / "neardup"))

from synthetic_pool import write_synthetic_pool  # noqa: E402

from curation.neardup.exact import decide_duplicates, load_pool_embeddings  # noqa: E402
from curation.stages.common import RunOptions  # noqa: E402
from curation.stages.neardup import NeardupConfig, run  # noqa: E402
from curation.stages.score import SCORER_RECORD, pool_tasks  # noqa: E402

RAY_DAEMONS = ("gcs_server", "raylet", "dashboard", "log_monitor", "runtime_env", "monitor.py")


class ProcessMonitor:
    """Peak RSS and open-file counts of this process and all its descendants, sampled from /proc."""

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.peak = {"driver": 0, "task": 0, "ray_daemon": 0}
        self.peak_name = {"driver": "", "task": "", "ray_daemon": ""}
        self.open_files = {"driver": 0, "task": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ProcessMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as handle:
                        parent = int(handle.read().rsplit(")", 1)[1].split()[1])
                except OSError:
                    continue
                children.setdefault(parent, []).append(int(entry))
        todo, family = [os.getpid()], []
        while todo:
            pid = todo.pop()
            family.append(pid)
            todo += children.get(pid, [])
        for pid in family:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    command = handle.read().replace(b"\0", b" ").decode(errors="replace")
                with open(f"/proc/{pid}/status") as handle:
                    rss = next(
                        int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS:")
                    )
                fds = len(os.listdir(f"/proc/{pid}/fd"))
            except (OSError, StopIteration):
                continue
            if command.startswith("ray::"):
                kind = "task"
            elif any(daemon in command for daemon in RAY_DAEMONS):
                kind = "ray_daemon"
            else:
                kind = "driver"
            if rss > self.peak[kind]:
                self.peak[kind], self.peak_name[kind] = rss, command[:80]
            if kind in self.open_files:
                self.open_files[kind] = max(self.open_files[kind], fds)


def pool_params(args: argparse.Namespace) -> dict:
    return {"rows": args.rows, "shard_rows": args.shard_rows, "seed": args.seed, "version": 1}


def ensure_pool(args: argparse.Namespace) -> Path:
    record = args.out / "synthetic.json"
    if record.exists() and json.loads(record.read_text()) == pool_params(args):
        print(f"reusing the synthetic pool in {args.out}", flush=True)
    elif not args.generate_only:
        # In a child process: the generator's memory must not count as the near-dup driver's.
        command = [sys.executable, __file__, "--generate-only", "--rows", str(args.rows)]
        command += ["--out", str(args.out), "--shard-rows", str(args.shard_rows)]
        subprocess.run([*command, "--seed", str(args.seed)], check=True, cwd=ROOT)
    else:
        started = time.time()
        made = write_synthetic_pool(
            args.out, args.rows, shard_rows=args.shard_rows, seed=args.seed, progress=True
        )
        record.write_text(json.dumps(pool_params(args)))
        print(
            f"synthetic pool: {made.rows:,} rows, {made.groups:,} planted groups "
            f"({made.planted_rows:,} rows) in {time.time() - started:.0f} s",
            flush=True,
        )
    return args.out / "pool"


def neardup_config(pool: Path, args: argparse.Namespace) -> NeardupConfig:
    return NeardupConfig(
        str(pool),
        max_cluster_rows=args.max_cluster_rows,
        border=args.border,
        pixel_threshold=args.pixel_threshold,
    )


def subset_pool(pool: Path, args: argparse.Namespace) -> Path:
    """The first shards holding --subset-rows rows, as a pool of links (the pool if smaller)."""
    shards = math.ceil(args.subset_rows / args.shard_rows)
    if shards >= len(pool_tasks(str(pool))):
        return pool
    subset = args.out / "subset" / "pool"
    scores = subset / "curation" / "score"
    scores.mkdir(parents=True, exist_ok=True)
    source_scores = pool / "curation" / "score"
    links = [(source_scores / SCORER_RECORD, scores / SCORER_RECORD)]
    for shard in range(shards):
        name = f"{shard:05d}"
        links += [(pool / f"{name}{ext}", subset / f"{name}{ext}") for ext in (".tar", ".parquet")]
        links += [
            (source_scores / f"{name}{ext}", scores / f"{name}{ext}")
            for ext in (".parquet", ".emb.npy", ".pix.npy")
        ]
    for source, target in links:
        if not target.exists():
            target.symlink_to(source)
    return subset


def pair_counts(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int]:
    """Pairs of rows grouped together by labelling a, by b, and by both (-1 = in no group)."""

    def pairs(labels: np.ndarray) -> int:
        _, sizes = np.unique(labels[labels >= 0], return_counts=True)
        return int((sizes * (sizes - 1) // 2).sum())

    both = (a >= 0) & (b >= 0)
    joint = a[both].astype(np.int64) * (int(b.max()) + 1 if len(b) else 1) + b[both]
    return pairs(a), pairs(b), pairs(joint)


def quality(pool: Path, config: NeardupConfig) -> dict:
    started = time.time()
    reports = run(config, RunOptions(progress=False))
    assert all(r.ok for r in reports), "neardup on the subset failed"
    distributed_s = time.time() - started
    out = Path(config.out_dir)
    tasks = pool_tasks(str(pool))
    ours = pa.concat_tables([pq.read_table(out / f"{t.shard_id}.parquet") for t in tasks])
    started = time.time()
    scorer = json.loads((Path(config.score_dir) / SCORER_RECORD).read_text())
    loaded = load_pool_embeddings(tasks, config.score_dir, scorer["tag"])
    rule = NeardupConfig(**{**config.__dict__, "use_embeddings": True}).rule()
    exact, _ = decide_duplicates(loaded, rule, None)
    exact_s = time.time() - started
    assert ours["uid"].to_pylist() == exact["uid"].to_pylist()
    # Our cluster ids are uid hashes; renumber them densely to count pairs.
    _, ours_ids = np.unique(ours["dup_cluster"].to_numpy(), return_inverse=True)
    ours_ids = np.where(ours["dup_cluster"].to_numpy() >= 0, ours_ids, -1)
    exact_pairs, our_pairs, common = pair_counts(exact["dup_cluster"].to_numpy(), ours_ids)
    ours_keep = ours["keep_dedup"].to_numpy(zero_copy_only=False)
    exact_keep = exact["keep_dedup"].to_numpy(zero_copy_only=False)
    return {
        "subset_rows": ours.num_rows,
        "exact_pairs": exact_pairs,
        "pairs": our_pairs,
        "pairs_lost": exact_pairs - common,
        "pairs_extra": our_pairs - common,
        "recall": common / exact_pairs if exact_pairs else 1.0,
        "precision": common / our_pairs if our_pairs else 1.0,
        "kept_agreement": float((ours_keep == exact_keep).mean()),
        "removed_recall": float((~ours_keep & ~exact_keep).sum() / max(1, (~exact_keep).sum())),
        "removed_precision": float((~ours_keep & ~exact_keep).sum() / max(1, (~ours_keep).sum())),
        "subset_neardup_s": round(distributed_s, 1),
        "exact_s": round(exact_s, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=250_000)
    parser.add_argument("--out", type=Path, default=Path("bench-out/neardup-scale"))
    parser.add_argument("--shard-rows", type=int, default=10_000)
    parser.add_argument("--subset-rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-cluster-rows", type=int, default=NeardupConfig("-").max_cluster_rows)
    parser.add_argument("--border", type=int, default=NeardupConfig("-").border)
    parser.add_argument("--pixel-threshold", type=float, default=NeardupConfig("-").pixel_threshold)
    parser.add_argument("--skip-shards", action="store_true", help="time neardup only")
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pool = ensure_pool(args)
    if args.generate_only:
        return 0
    config = neardup_config(pool, args)
    # A fresh run each time: results from an earlier run of this folder would only be skipped.
    for folder in (Path(config.out_dir), args.out / "train", args.out / "subset"):
        subprocess.run(["rm", "-rf", str(folder)], check=True)

    with ProcessMonitor() as monitor:
        started = time.time()
        reports = run(config, RunOptions(progress=True))
        neardup_s = time.time() - started
        if not all(r.ok for r in reports):
            print("\n".join(r.describe() for r in reports))
            return 1
        print(reports[-1].describe(), flush=True)
        shards_s = 0.0
        if not args.skip_shards:
            started = time.time()
            command = [sys.executable, "-m", "curation", "shards", "--pool", str(pool)]
            command += ["--out", str(args.out / "train"), "--require", "neardup"]
            subprocess.run(command, check=True, cwd=ROOT)
            shards_s = time.time() - started
        monitor.sample()
    summary = reports[-1].summary
    subset = subset_pool(pool, args)
    print(f"quality against the exact method on {subset}", flush=True)
    subset_config = neardup_config(subset, args)
    match = quality(subset, subset_config)
    result = {
        "rows": args.rows,
        "wall_s": round(neardup_s + shards_s, 1),
        "neardup_s": round(neardup_s, 1),
        "shards_s": None if args.skip_shards else round(shards_s, 1),
        "peak_task_rss_bytes": max(monitor.peak["driver"], monitor.peak["task"]),
        "peak_rss_bytes": dict(monitor.peak),
        "peak_rss_process": dict(monitor.peak_name),
        "open_files_max": monitor.open_files["task"],
        "open_files_driver_max": monitor.open_files["driver"],
        "recall": match["recall"],
        "precision": match["precision"],
        "quality": match,
        "duplicates_removed": summary["duplicates_removed"],
        "groups": summary["clusters"],
        "partition": summary["partition"],
        "neardup_seconds_per_million_rows": round(neardup_s / args.rows * 1e6, 1),
        "cpus": os.cpu_count(),
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
