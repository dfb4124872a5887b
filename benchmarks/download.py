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

The limit (issue 24): the work no downloader can avoid is decoding, resizing and re-encoding
the images. The benchmark times exactly that, in this process on one core (CPU time), on the
bytes of the same files our run stored, with curation.score.images (DCT draft decode to the
target size, BOX down / LANCZOS up, JPEG at the same quality): L images per core-second. The
loopback server runs on the same cores, so its CPU time during each run is read from /proc and
the limit for that run is L x (cores - server CPU-seconds per wall second). `ours / limit` is
our images/s over that. Both tools do the same image work: img2dataset's defaults are
area-interpolation downscaling, Lanczos upscaling and JPEG quality 95 (4:2:0), ours here BOX
(area averaging) down, LANCZOS up, quality 95 (Pillow's default 4:2:0); the benchmark compares
one stored JPEG's quantization tables and chroma subsampling from each tool. The last line is
`RESULT {json}`: vs_reference (ours / img2dataset images/s, Ray start included), vs_limit,
target_met (vs_limit >= 0.8 and vs_reference >= 2).

A third run, `ours-inprocess`, downloads the same list with our stage in one process without
Ray (`use_ray=False`, the same threads and settings, its tasks one after another) and reads that
process's CPU time over the download alone: the CPU our code spends per stored image, net of
Ray's own processes and of waiting, beside the limit's (RESULT `cpu_vs_limit`, the limit's CPU
per image over ours; not part of target_met, which stays on images/s).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

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


def process_tree(root_pid: int) -> dict[int, tuple[int, float]]:
    """{pid: (RSS bytes, CPU seconds so far)} for `root_pid` and all its descendants (/proc)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    stats: dict[int, tuple[int, float]] = {}
    page, tick = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            children[int(fields[1])].append(int(entry))
            stats[int(entry)] = (int(fields[21]) * page, (int(fields[11]) + int(fields[12])) / tick)
        except (OSError, ValueError, IndexError):
            continue
    tree, stack = {}, [root_pid]
    while stack:
        pid = stack.pop()
        if pid in stats:
            tree[pid] = stats[pid]
        stack.extend(children.get(pid, []))
    return tree


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process and its reaped children (/proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return sum(int(field) for field in fields[11:15]) / os.sysconf("SC_CLK_TCK")


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
        server_cpu_before = process_cpu_s(server.pid)
        child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
        peak = [0]
        cpu_by_pid: dict[int, float] = {}  # last CPU seconds seen per process of the tree
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                tree = process_tree(child.pid)
                peak[0] = max(peak[0], sum(rss for rss, _ in tree.values()))
                cpu_by_pid.update({pid: cpu for pid, (_, cpu) in tree.items()})
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        output = child.communicate()[0]
        done.set()
        sampler.join()
        server_cpu_s = process_cpu_s(server.pid) - server_cpu_before
        if child.returncode != 0:
            raise RuntimeError(f"{tool} run failed with exit code {child.returncode}")
        result = json.loads(output.strip().splitlines()[-1])
        result["peak_rss_mib"] = peak[0] / 2**20
        # The last sample before each process ended (up to 0.2 s of it may be missed).
        result["tree_cpu_s"] = sum(cpu_by_pid.values())
        result["server_cpu_s"] = server_cpu_s
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

    in_process = args.child == "ours-inprocess"
    started = time.perf_counter()
    # A private local cluster with exactly `processes` CPUs (never join another session's cluster),
    # listening on loopback only.
    os.environ.pop("RAY_ADDRESS", None)
    if not in_process:
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
    started, cpu_started = time.perf_counter(), time.process_time()
    reports = download.run(config, RunOptions(progress=False, use_ray=not in_process))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    if not all(report.ok for report in reports):
        raise RuntimeError("\n".join(report.describe() for report in reports))
    rows = [
        row
        for path in sorted(Path(args.out).glob("*.parquet"))
        for row in pq.read_table(path, columns=["url", "status", "error_message"]).to_pylist()
    ]
    return {"wall_s": wall, "setup_s": ray_start_s, "rows": rows, "download_cpu_s": cpu}


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
        "tree_cpu_s": result["tree_cpu_s"],
        "server_cpu_s": result["server_cpu_s"],
        "failures": dict(reasons.most_common()),
        "download_cpu_s": result.get("download_cpu_s"),
        "success_urls": sorted(row["url"] for row in successes),
    }


def served_file(world: Path, routes: dict, url: str, hops: int = 8) -> Path | None:
    """The file the mini web answers `url` with, following its redirects (None: no file)."""
    for _ in range(hops):
        parts = urlsplit(url)
        route = routes["hosts"].get(parts.hostname, {}).get("routes", {}).get(parts.path)
        if route is None:
            return None
        if "file" in route:
            return world / "www" / route["file"]
        if "redirect" not in route:
            return None
        url = route["redirect"]["location"]
    return None


def planted_delay_s(routes: dict, urls: list[str]) -> float:
    """The longest delay the mini web plants before answering one of `urls` (its "slow" fault
    routes): no downloader finishes the list sooner, however fast its CPU work."""
    delays = [0.0]
    for url in urls:
        parts = urlsplit(url)
        route = routes["hosts"].get(parts.hostname, {}).get("routes", {}).get(parts.path, {})
        delays.append(float(route.get("delay_s", 0.0)))
    return max(delays)


def limit_images_per_core_s(
    world: Path, urls: list[str], image_size: int, quality: int, passes: int = 2
) -> dict:
    """Decode + resize + encode, from memory, of the files behind `urls` (one per URL, as the
    downloader handles them) on one core: images per CPU-second of this process, the faster of
    `passes` passes (the work that cannot be avoided, at its best on this machine)."""
    from PIL import Image

    from curation.download.imaging import ImageOptions, scaled_size
    from curation.score.images import decode_rgb, encode_jpeg

    routes = json.loads((world / "www" / "routes.json").read_text())
    files = [served_file(world, routes, url) for url in urls]
    blobs = [path.read_bytes() for path in files if path is not None]
    options = ImageOptions(image_size, "keep_ratio_largest", jpeg_quality=quality)
    seconds = []
    for _ in range(passes):
        started = time.process_time()
        for data in blobs:
            with Image.open(io.BytesIO(data)) as header:
                target = scaled_size(*header.size, options)
                image = decode_rgb(header, wanted=target)  # DCT draft for JPEGs
                if image.size != target:
                    down = target[0] < image.size[0]
                    image = image.resize(
                        target, Image.Resampling.BOX if down else Image.Resampling.LANCZOS
                    )
                encode_jpeg(image, quality)
        seconds.append(time.process_time() - started)
    return {
        "images": len(blobs),
        "unresolved_urls": len(files) - len(blobs),
        "cpu_s": min(seconds),
        "images_per_core_s": len(blobs) / min(seconds),
        "pass_cpu_s": seconds,
        "planted_delay_s": planted_delay_s(routes, urls),
    }


def first_jpeg(folder: Path) -> bytes | None:
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".jpg"):
                    return tar.extractfile(member).read()
    return None


def encoding_of(jpeg: bytes | None) -> dict:
    """Chroma subsampling and quantization tables of a stored JPEG."""
    from PIL import Image, JpegImagePlugin

    if jpeg is None:
        return {}
    with Image.open(io.BytesIO(jpeg)) as image:
        sampling = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}.get(
            JpegImagePlugin.get_sampling(image), "other"
        )
        return {
            "subsampling": sampling,
            "tables": {k: list(v) for k, v in image.quantization.items()},
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
    parser.add_argument(
        "--child", choices=("ours", "img2dataset", "ours-inprocess"), help=argparse.SUPPRESS
    )
    parser.add_argument("--candidates", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--allow", help=argparse.SUPPRESS)
    parser.add_argument("--agent", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = (child_img2dataset if args.child == "img2dataset" else child_ours)(args)
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
        # the same fresh server for each, one after the other
        for tool in ("img2dataset", "ours", "ours-inprocess"):
            result = run_child(tool, args, candidates, scratch / f"out-{tool}", world)
            summaries.append(summarise(tool, result, clean_urls))
            shown = {k: v for k, v in summaries[-1].items() if k != "success_urls"}
            print(json.dumps(shown), flush=True)
        encodings = {
            tool: encoding_of(first_jpeg(scratch / f"out-{tool}"))
            for tool in ("img2dataset", "ours")
        }
        limit = limit_images_per_core_s(
            world, summaries[1]["success_urls"], args.image_size, quality=95
        )
    reference, ours, in_process = summaries
    print(
        f"\n{'tool':<16}{'images/s':>10}{'URLs/s':>9}{'wall s':>8}{'ok':>7}{'ok clean':>10}{'peak MiB':>10}"
    )
    for s in summaries:
        print(
            f"{s['tool']:<16}{s['images_per_s']:>10.1f}{s['urls_per_s']:>9.1f}{s['wall_s']:>8.1f}"
            f"{s['successes']:>7}{s['clean_successes']:>10}{s['peak_rss_mib']:>10.0f}"
        )
    for s in summaries:
        print(f"{s['tool']} failures: {s['failures']}")
    ratio = ours["images_per_s"] / reference["images_per_s"]
    ratio_with_setup = ours["images_per_s_with_setup"] / reference["images_per_s_with_setup"]
    print(
        f"ratio ours/img2dataset images/s: {ratio:.2f}x; counting our Ray start-up "
        f"({ours['setup_s']:.1f} s) too: {ratio_with_setup:.2f}x (target >= 2x); clean successes "
        f"{ours['clean_successes']} vs {reference['clean_successes']}"
    )
    ours_tables, their_tables = (encodings[t].get("tables") for t in ("ours", "img2dataset"))
    print(
        "same image work: both resize keep_ratio_largest to "
        f"{args.image_size} px, area/BOX down and Lanczos up, JPEG quality 95; one stored JPEG "
        f"each: chroma {encodings['ours'].get('subsampling')} (ours) vs "
        f"{encodings['img2dataset'].get('subsampling')} (img2dataset), quantization tables "
        f"{'identical' if ours_tables and ours_tables == their_tables else 'DIFFERENT'}"
    )
    cores = args.processes
    per_core = limit["images_per_core_s"]
    print(
        f"limit: decode (DCT draft) + resize + encode from memory of the {limit['images']} files "
        f"behind our successful URLs: {per_core:.1f} images per core-second (passes "
        f"{', '.join(f'{s:.2f}' for s in limit['pass_cpu_s'])} CPU s; "
        f"{limit['unresolved_urls']} URLs without a served file)"
    )
    vs_limit = {}
    for s in summaries[:2]:
        server_cores = s["server_cpu_s"] / s["wall_s"]
        ceiling = per_core * (cores - server_cores)
        vs_limit[s["tool"]] = s["images_per_s"] / ceiling
        cpu_per_image_ms = 1000 * s["tree_cpu_s"] / max(s["successes"], 1)
        print(
            f"  {s['tool']:<12} server {s['server_cpu_s']:.1f} CPU s over {s['wall_s']:.1f} s "
            f"({server_cores:.2f} of {cores} cores) -> limit {ceiling:.1f} images/s; "
            f"images/s / limit {vs_limit[s['tool']]:.2f}; its processes used {s['tree_cpu_s']:.1f} "
            f"CPU s, {cpu_per_image_ms:.1f} ms per image vs the limit's {1000 / per_core:.1f} ms"
        )
    print(
        f"ours / limit: {vs_limit['ours']:.2f} (target >= 0.8); img2dataset / limit: "
        f"{vs_limit['img2dataset']:.2f}"
    )
    if limit["planted_delay_s"]:
        floor_s = limit["planted_delay_s"]
        best = ours["successes"] / floor_s
        server_cores = ours["server_cpu_s"] / ours["wall_s"]
        print(
            f"latency floor: the mini web answers some of these URLs only after {floor_s:g} s, so "
            f"no downloader stores these {ours['successes']} images faster than {best:.0f} "
            f"images/s here, {best / (per_core * (cores - server_cores)):.2f} of the limit"
        )
    cpu_ms = 1000 * in_process["download_cpu_s"] / max(in_process["successes"], 1)
    cpu_vs_limit = (1000 / per_core) / cpu_ms
    print(
        f"CPU per stored image, our stage in one process without Ray ({in_process['successes']} "
        f"images, {in_process['wall_s']:.1f} s wall): {cpu_ms:.2f} ms vs the limit's "
        f"{1000 / per_core:.2f} ms: {cpu_vs_limit:.2f} of the limit on CPU"
    )
    result = {
        "vs_reference": round(ratio_with_setup, 3),
        "vs_limit": round(vs_limit["ours"], 3),
        "target_met": vs_limit["ours"] >= 0.8 and ratio_with_setup >= 2.0,
        "vs_reference_without_ray_start": round(ratio, 3),
        "cpu_vs_limit": round(cpu_vs_limit, 3),
    }
    print("RESULT " + json.dumps(result), flush=True)
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
