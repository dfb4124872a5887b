"""Per-core throughput of each stage, measured on a real run, and what a crawl at scale costs.

Measures extract (generated Common Crawl-like WARC files) and MetaCLIP matching (500k entries) on
one core here, reads download and score rates from the per-shard statistics of a run (default: the
`make demo` folder; every stage task holds one CPU, so rows per task-second is the per-core
rate), and projects cores, GPUs, hours and dollars for one Common Crawl snapshot and for
a 10B-image pool. Every assumption is a flag and is printed with the result.

    .venv/bin/python benchmarks/scale.py [--run demo-run] [--cores 1792] [--dollars-per-core-hour …]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from curation.stats import read_stage_records


@dataclass(frozen=True)
class Rate:
    stage: str
    unit: str
    per_core_second: float
    shards: int

    def describe(self) -> str:
        return f"{self.stage:<10}{self.per_core_second:>12,.1f} {self.unit}/s per core  ({self.shards} shards)"


def measure_extract(scratch: Path, megabytes: int = 16) -> Rate:
    """Our extractor on generated Common Crawl-like WARC files (benchmarks/extract.py's pages)."""
    import extract as extract_benchmark

    files = []
    for index in range(2):
        path = scratch / f"scale-{index}.warc.gz"
        if not path.exists():
            extract_benchmark.generate_warc(path, megabytes * 1_000_000 // 2, seed=index)
        files.append(str(path))
    started = time.process_time()
    for path in files:
        extract_benchmark.ours_extract(path)
    seconds = time.process_time() - started
    size_mb = sum(Path(f).stat().st_size for f in files) / 1e6
    return Rate("extract", "MB", size_mb / seconds, len(files))


def measure_balance(entries: int = 500_000, texts: int = 50_000) -> Rate:
    """MetaCLIP matching against a 500k-entry metadata (benchmarks/metaclip.py's generators)."""
    import metaclip as metaclip_benchmark

    from curation.metaclip.matching import EntryMatcher

    rng = np.random.default_rng(0)
    matcher = EntryMatcher(metaclip_benchmark.synthetic_metadata(entries, rng))
    alt_texts = metaclip_benchmark.synthetic_alt_texts(texts, rng)
    started = time.process_time()
    matcher.match_batch(alt_texts)
    return Rate("balance", "text", texts / (time.process_time() - started), 1)


def rate_from_run(run: str, stage: str, unit: str) -> Rate | None:
    """Rows per task-second from a run's stats (tasks hold one CPU each)."""
    records = [r for r in read_stage_records(run, stage) if r.get("wall_seconds")]
    if not records:
        return None
    seconds = sum(r["wall_seconds"] for r in records)
    return Rate(stage, unit, sum(r["rows_in"] for r in records) / seconds, len(records))


def measured_rates(run: str, scratch: Path) -> dict[str, Rate]:
    rates = {"extract": measure_extract(scratch), "balance_match": measure_balance()}
    for stage, unit in (("download", "URL"), ("score", "image")):
        rate = rate_from_run(run, stage, unit)
        if rate is not None:
            rates[stage] = rate
    return rates


def project(rates: dict[str, Rate], options: argparse.Namespace) -> list[tuple[str, float, float]]:
    """(what, core-hours or GPU-hours, dollars) for one snapshot."""
    snapshot_mb = options.warc_files * options.gb_per_warc * 1000
    urls = options.images_per_snapshot / options.download_success
    rows = []
    if "extract" in rates:
        hours = snapshot_mb / rates["extract"].per_core_second / 3600
        rows.append(("extract (core-h)", hours, hours * options.dollars_per_core_hour))
    if "download" in rates:
        hours = urls / rates["download"].per_core_second / 3600
        rows.append(("download (core-h)", hours, hours * options.dollars_per_core_hour))
    if "balance_match" in rates:
        hours = urls * options.texts_per_url / rates["balance_match"].per_core_second / 3600
        rows.append(("balance (core-h)", hours, hours * options.dollars_per_core_hour))
    gpu_hours = options.images_per_snapshot / options.gpu_images_per_second / 3600
    rows.append(
        ("score (GPU-h, assumed rate)", gpu_hours, gpu_hours * options.dollars_per_gpu_hour)
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", default="demo-run", help="a run folder with stage statistics")
    parser.add_argument("--scratch", default="bench-out/scale", help="generated WARC files")
    parser.add_argument("--warc-files", type=int, default=90_000, help="WARC files per snapshot")
    parser.add_argument(
        "--gb-per-warc", type=float, default=1.0, help="compressed GB per WARC file"
    )
    parser.add_argument(
        "--images-per-snapshot",
        type=float,
        default=214e6,
        help="downloaded images per snapshot (Raon: ~9B from 42 snapshots)",
    )
    parser.add_argument(
        "--download-success",
        type=float,
        default=0.6,
        help="share of URLs that download (img2dataset reports 56-94%%)",
    )
    parser.add_argument("--texts-per-url", type=float, default=1.5, help="texts matched per URL")
    parser.add_argument(
        "--gpu-images-per-second",
        type=float,
        default=2000.0,
        help="CLIP scoring rate per GPU (not measured here: no GPU was lent)",
    )
    parser.add_argument(
        "--dollars-per-core-hour",
        type=float,
        default=0.045,
        help="e.g. c7i.8xlarge on-demand, us-east-1: $1.428/h for 32 vCPU",
    )
    parser.add_argument(
        "--dollars-per-gpu-hour",
        type=float,
        default=1.86,
        help="e.g. g6e.xlarge (1x L40S) on-demand",
    )
    parser.add_argument("--cores", type=int, default=56 * 32, help="cluster size for wall time")
    parser.add_argument("--pool-images", type=float, default=10e9, help="target pool size")
    options = parser.parse_args()

    scratch = Path(options.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    rates = measured_rates(options.run, scratch)
    if "download" not in rates:
        print(f"no download statistics under {options.run}: run `make demo` first (or pass --run)")
    print(
        "per-core rates: extract and balance measured here on generated CC-like data; download "
        f"and score from the stage statistics of {options.run} (mini web on loopback: no WAN "
        "latency, so download is CPU-bound as on a well-provisioned crawler)"
    )
    for rate in rates.values():
        print("  " + rate.describe())
    rows = project(rates, options)
    snapshots = options.pool_images / options.images_per_snapshot
    cpu_hours = sum(h for name, h, _ in rows if "core-h" in name)
    print(
        f"\none snapshot: {options.warc_files:,} WARC files x {options.gb_per_warc} GB, "
        f"{options.images_per_snapshot / 1e6:,.0f}M images kept of "
        f"{options.images_per_snapshot / options.download_success / 1e6:,.0f}M URLs"
    )
    print(f"{'step':<30}{'hours':>14}{'dollars':>12}")
    for name, hours, dollars in rows:
        print(f"{name:<30}{hours:>14,.0f}{dollars:>12,.0f}")
    total = sum(d for _, _, d in rows)
    print(f"{'total':<30}{'':>14}{total:>12,.0f}")
    print(f"wall time on {options.cores:,} cores: {cpu_hours / options.cores:,.1f} h per snapshot")
    print(
        f"\n{options.pool_images / 1e9:.0f}B-image pool = {snapshots:,.0f} snapshots: "
        f"{cpu_hours * snapshots:,.0f} core-h, ${total * snapshots:,.0f}, "
        f"{cpu_hours * snapshots / options.cores / 24:,.1f} days on {options.cores:,} cores"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
