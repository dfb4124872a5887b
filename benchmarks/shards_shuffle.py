"""The `shards` stage on a synthetic pool: wall time, peak RSS of the driver and of every task
process, and the most files under the pool or output folder any process held open at once.

Writes (once, reused afterwards) a pool of --rows samples in shards of --rows-per-shard, each an
8x8 JPEG, then runs `python -m curation shards` on it in a child process (the CLI the neardup
scale benchmark calls) and samples /proc every --interval seconds for that process and all its
descendants (the Ray workers). Prints and writes OUT/result.json.

    .venv/bin/python benchmarks/shards_shuffle.py --rows 200000 --out bench-out/shards-shuffle \
        [--rows-per-shard 10000] [--samples-per-shard 10000] [--max-fan-in 64]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation import fsio
from curation.download.shard_writer import write_pool_shard

TINY_JPEGS = 64


def tiny_jpegs(count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def write_synthetic_pool(root: Path, rows: int, rows_per_shard: int, seed: int = 0) -> int:
    """A pool of `rows` successful samples (8x8 JPEGs) in shards of `rows_per_shard`; returns
    the shard count. Shard s holds rows [s * rows_per_shard, ...), uid = sha of the row number."""
    jpegs = tiny_jpegs(TINY_JPEGS, seed)
    shards = -(-rows // rows_per_shard)
    for shard in range(shards):
        shard_id = f"{shard:05d}"
        first, last = shard * rows_per_shard, min(rows, (shard + 1) * rows_per_shard)
        records = []
        for row in range(first, last):
            jpg = jpegs[(row - first) % TINY_JPEGS]
            records.append(
                {
                    "uid": hashlib.md5(f"{seed}:{row}".encode()).hexdigest(),
                    "key": f"{shard_id}{row - first:05d}",
                    "url": f"http://127.0.0.1/{row}.jpg",
                    "text": f"sample {row}",
                    "status": "success",
                    "width": 8,
                    "height": 8,
                    "original_width": 8,
                    "original_height": 8,
                    "sha256": hashlib.sha256(jpg).hexdigest(),
                }
            )
        write_pool_shard(
            lambda name: fsio.open_atomic(str(root / name)),
            shard_id,
            records,
            lambda record: jpegs[int(record["key"][5:]) % TINY_JPEGS],
        )
    return shards


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def command_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def open_files_under(pid: int, folders: tuple[str, ...]) -> int:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    count = 0
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        count += target.startswith(folders)
    return count


def run_sampled(command: list[str], folders: tuple[str, ...], interval: float) -> dict[str, float]:
    started = time.perf_counter()
    child = subprocess.Popen(command)
    peak_driver = peak_task = open_max = 0
    while child.poll() is None:
        peak_driver = max(peak_driver, rss_bytes(child.pid))
        open_max = max(open_max, open_files_under(child.pid, folders))
        for pid in descendants(child.pid):
            if command_name(pid).startswith("ray::"):  # a worker running (or idle between) tasks
                peak_task = max(peak_task, rss_bytes(pid))
                open_max = max(open_max, open_files_under(pid, folders))
        time.sleep(interval)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {child.returncode}")
    return {
        "wall_s": time.perf_counter() - started,
        "peak_driver_rss_bytes": peak_driver,
        "peak_task_rss_bytes": peak_task,
        "open_files_max": open_max,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rows-per-shard", type=int, default=10_000)
    parser.add_argument("--samples-per-shard", type=int, default=10_000)
    parser.add_argument("--image-size", type=int, default=8)
    parser.add_argument("--max-fan-in", type=int, default=64)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--out", default="bench-out/shards-shuffle")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    pool = out / f"pool-{args.rows}-{args.rows_per_shard}"
    if not (pool / "_complete").exists():
        shutil.rmtree(pool, ignore_errors=True)
        pool.mkdir(parents=True)
        started = time.perf_counter()
        shards = write_synthetic_pool(pool, args.rows, args.rows_per_shard)
        (pool / "_complete").write_text(str(shards))
        print(
            f"wrote {args.rows:,} rows in {shards} shards in {time.perf_counter() - started:.1f}s"
        )
    train = out / "train"
    shutil.rmtree(train, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "curation",
        "shards",
        "--pool",
        str(pool),
        "--out",
        str(train),
        "--require",
        "neardup",
        "--samples-per-shard",
        str(args.samples_per_shard),
        "--image-size",
        str(args.image_size),
        "--max-fan-in",
        str(args.max_fan_in),
    ]
    result = run_sampled(command, (str(pool), str(train)), args.interval)
    plan = json.loads((train / "_plan" / "plan.json").read_text())
    sizes = list(json.loads((train / "sizes.json").read_text()).values())
    result.update(
        rows=args.rows,
        pool_shards=plan["pool_shards"],
        out_shards=plan["out_shards"],
        shuffle_levels=plan["shuffle"]["levels"],
        max_fan_in=args.max_fan_in,
        shard_size_min=min(sizes),
        shard_size_max=max(sizes),
        rows_per_second=args.rows / result["wall_s"],
    )
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0 if sum(sizes) == args.rows else 1


if __name__ == "__main__":
    sys.exit(main())
