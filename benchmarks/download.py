"""Our downloader vs img2dataset's `download()` on the same mini Common Crawl, in one run.

Same candidate list (one row per image URL of the world, minus the URLs that lead to the
forbidden address: img2dataset has no address guard, so it must never see them), a fresh copy of
the same mini web server for each tool (its fail-first routes keep state), the same number of
processes and threads per process, the same image settings (size, resize mode, JPEG quality,
timeout). Each tool runs in its own child process; the parent samples the RSS of the child's
whole process tree (Ray's raylet and workers included) for the peak memory.

    .venv/bin/python benchmarks/download.py [--world DIR] [--scale small] [--processes 2] [--threads 32]

Prints images/s (successful images per wall second), successes on clean URLs, failures by
reason, peak memory, and the ratio ours / img2dataset.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402 (after the environment is set)
import pyarrow.parquet as pq  # noqa: E402

GUARDED_FAULTS = ("forbidden_address", "redirect_to_forbidden")  # never hand these to img2dataset


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def build_or_load_world(world: str | None, scale: str, scratch: Path) -> Path:
    if world:
        return Path(world)
    root = scratch / "world"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "curation",
            "minicc",
            "build",
            "--out",
            str(root),
            "--scale",
            scale,
            "--port",
            str(free_port()),
        ],
        cwd=REPO,
        check=True,
    )
    return root


def write_candidates(world: Path, out: Path) -> tuple[Path, set[str]]:
    """One row per image URL (a deduplicated candidate list); returns it and the clean URLs."""
    images = pq.read_table(
        world / "truth_images.parquet", columns=["url", "good_caption", "fault"]
    ).to_pylist()
    rows = [row for row in images if row["fault"] not in GUARDED_FAULTS]
    texts = [row["good_caption"] or "an image" for row in rows]
    urls = [row["url"] for row in rows]
    table = pa.table(
        {
            "uid": [
                hashlib.blake2b(f"{u}\t{t}".encode(), digest_size=16).hexdigest()
                for u, t in zip(urls, texts)
            ],
            "url": urls,
            "text": texts,
            "texts": [[t] for t in texts],
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "candidates.parquet")
    return out / "candidates.parquet", {row["url"] for row in rows if row["fault"] is None}


def process_tree_rss_bytes(root_pid: int) -> int:
    """Sum of RSS over `root_pid` and all its descendants (read from /proc)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            children[int(fields[1])].append(int(entry))
            rss[int(entry)] = int(fields[21]) * page
        except (OSError, ValueError, IndexError):
            continue
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run_child(
    tool: str, args: argparse.Namespace, candidates: Path, out: Path, world: Path
) -> dict:
    """Serve a fresh mini web, run one tool in a child process, sample its memory, parse its JSON."""
    server_errors = out.parent / f"{tool}-server.log"
    with open(server_errors, "w") as errors:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "curation",
                "minicc",
                "serve",
                "--root",
                str(world),
                "--log",
                str(out.parent / f"{tool}-requests.jsonl"),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    try:
        wait_for_server(world, server, server_errors)
        command = [
            sys.executable,
            __file__,
            "--child",
            tool,
            "--candidates",
            str(candidates),
            "--out",
            str(out),
            "--processes",
            str(args.processes),
            "--threads",
            str(args.threads),
            "--image-size",
            str(args.image_size),
            "--samples-per-shard",
            str(args.samples_per_shard),
            "--per-host-connections",
            str(args.per_host_connections),
            "--allow",
            json.loads((world / "world.json").read_text())["allowed_cidr"],
            "--agent",
            json.loads((world / "world.json").read_text())["robots"]["agent_token"],
        ]
        child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], process_tree_rss_bytes(child.pid))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        output = child.communicate()[0]
        done.set()
        sampler.join()
        if child.returncode != 0:
            raise RuntimeError(f"{tool} run failed with exit code {child.returncode}")
        result = json.loads(output.strip().splitlines()[-1])
        result["peak_rss_mib"] = peak[0] / 2**20
        return result
    finally:
        server.terminate()
        server.wait()


def wait_for_server(
    world: Path, server: subprocess.Popen, errors: Path, timeout_s: float = 120.0
) -> None:
    info = json.loads((world / "world.json").read_text())
    host, port = info["hosts"][-1], info["port"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the mini web server exited: {errors.read_text()[-2000:]}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the mini web did not come up on {host}:{port}")


def child_ours(args: argparse.Namespace) -> dict:
    from curation.download.fetcher import FetchConfig
    from curation.download.http_exchange import Timeouts
    from curation.download.imaging import ImageOptions
    from curation.runner import ensure_ray
    from curation.stages import download
    from curation.stages.common import RunOptions
    from curation.stages.download import DownloadConfig

    started = time.perf_counter()
    # A private local cluster with exactly `processes` CPUs (never join another session's cluster),
    # listening on loopback only.
    os.environ.pop("RAY_ADDRESS", None)
    ensure_ray(num_cpus=args.processes)
    ray_start_s = time.perf_counter() - started
    config = DownloadConfig(
        out=args.out,
        inputs=(args.candidates,),
        fetch=FetchConfig(
            user_agent_token=args.agent,
            allow_networks=(args.allow,),
            timeouts=Timeouts(connect_s=5.0, read_s=args.timeout, total_s=3 * args.timeout),
            per_host_connections=args.per_host_connections,
        ),
        image=ImageOptions(args.image_size, "keep_ratio_largest", jpeg_quality=95),
        threads=args.threads,
        samples_per_shard=args.samples_per_shard,
    )
    started = time.perf_counter()
    reports = download.run(config, RunOptions(progress=False))
    wall = time.perf_counter() - started
    if not all(report.ok for report in reports):
        raise RuntimeError("\n".join(report.describe() for report in reports))
    rows = [
        row
        for path in sorted(Path(args.out).glob("*.parquet"))
        for row in pq.read_table(path, columns=["url", "status", "error_message"]).to_pylist()
    ]
    return {"wall_s": wall, "setup_s": ray_start_s, "rows": rows}


def child_img2dataset(args: argparse.Namespace) -> dict:
    from img2dataset import download

    started = time.perf_counter()
    download(
        url_list=args.candidates,
        input_format="parquet",
        url_col="url",
        caption_col="text",
        output_folder=args.out,
        output_format="webdataset",
        image_size=args.image_size,
        resize_mode="keep_ratio_largest",
        encode_quality=95,
        processes_count=args.processes,
        thread_count=args.threads,
        number_sample_per_shard=args.samples_per_shard,
        timeout=int(args.timeout),
        extract_exif=False,
        enable_wandb=False,
        distributor="multiprocessing",
        retries=0,
        user_agent_token=args.agent,
    )
    wall = time.perf_counter() - started
    rows = [
        row
        for path in sorted(Path(args.out).glob("*.parquet"))
        for row in pq.read_table(path, columns=["url", "status", "error_message"]).to_pylist()
    ]
    return {"wall_s": wall, "setup_s": 0.0, "rows": rows}


def summarise(name: str, result: dict, clean_urls: set[str]) -> dict:
    rows = result["rows"]
    successes = [row for row in rows if row["status"] == "success"]
    reasons = collections.Counter(
        (row["error_message"] or "")[:48] for row in rows if row["status"] != "success"
    )
    return {
        "tool": name,
        "urls": len(rows),
        "successes": len(successes),
        "clean_successes": sum(row["url"] in clean_urls for row in successes),
        "wall_s": result["wall_s"],
        "setup_s": result["setup_s"],
        "images_per_s": len(successes) / result["wall_s"],
        "urls_per_s": len(rows) / result["wall_s"],
        "images_per_s_with_setup": len(successes) / (result["wall_s"] + result["setup_s"]),
        "peak_rss_mib": result["peak_rss_mib"],
        "failures": dict(reasons.most_common()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--world", help="an existing `minicc build` folder (default: build one)")
    parser.add_argument("--scale", default="small")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--samples-per-shard", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument(
        "--per-host-connections",
        type=int,
        default=16,
        help="ours: simultaneous requests per host for the whole run (img2dataset has no such "
        "limit); the mini web puts ~400 URLs on each of 8 hosts, so this bounds our concurrency",
    )
    parser.add_argument("--child", choices=("ours", "img2dataset"), help=argparse.SUPPRESS)
    parser.add_argument("--candidates", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--allow", help=argparse.SUPPRESS)
    parser.add_argument("--agent", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = (child_ours if args.child == "ours" else child_img2dataset)(args)
        print(json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-download-") as scratch_dir:
        scratch = Path(scratch_dir)
        world = build_or_load_world(args.world, args.scale, scratch)
        candidates, clean_urls = write_candidates(world, scratch / "candidates")
        print(
            f"machine: {os.cpu_count()} CPUs ({platform_line()}); world {world} ; "
            f"{pq.read_metadata(candidates).num_rows} URLs ({len(clean_urls)} clean); "
            f"{args.processes} processes x {args.threads} threads; image size {args.image_size}, "
            f"keep_ratio_largest, JPEG q95, timeout {args.timeout:g} s",
            flush=True,
        )
        summaries = []
        for tool in ("img2dataset", "ours"):  # the same fresh server for each, one after the other
            result = run_child(tool, args, candidates, scratch / f"out-{tool}", world)
            summaries.append(summarise(tool, result, clean_urls))
            print(json.dumps(summaries[-1]), flush=True)
    reference, ours = summaries
    print(
        f"\n{'tool':<12}{'images/s':>10}{'URLs/s':>9}{'wall s':>8}{'ok':>7}{'ok clean':>10}{'peak MiB':>10}"
    )
    for s in summaries:
        print(
            f"{s['tool']:<12}{s['images_per_s']:>10.1f}{s['urls_per_s']:>9.1f}{s['wall_s']:>8.1f}"
            f"{s['successes']:>7}{s['clean_successes']:>10}{s['peak_rss_mib']:>10.0f}"
        )
    for s in summaries:
        print(f"{s['tool']} failures: {s['failures']}")
    ratio = ours["images_per_s"] / reference["images_per_s"]
    ratio_with_setup = ours["images_per_s_with_setup"] / reference["images_per_s_with_setup"]
    print(
        f"ratio ours/img2dataset images/s: {ratio:.2f}x (target >= 1.5x); counting our Ray start-up "
        f"({ours['setup_s']:.1f} s) too: {ratio_with_setup:.2f}x; clean successes "
        f"{ours['clean_successes']} vs {reference['clean_successes']}"
    )
    return 0


def platform_line() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
